"""The access log (`--access-logfile`, `--access-log-format`), end to end, real binary."""

import json
import os
import re
import signal

import pytest
from conftest import run_tandem, wait_until

# addr - user [time] "request" status bytes "referer" "agent" seconds worker
COMBINED = re.compile(
    r"^(?P<addr>\S+) - (?P<user>\S+) \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)" '
    r"(?P<seconds>\d+\.\d{3}) (?P<worker>\d+|-)$"
)


def lines_of(path, count, timeout=10.0):
    """The first `count` lines of the log, waiting until they are there."""
    got = []

    def enough():
        nonlocal got
        got = path.read_text().splitlines() if path.exists() else []
        return len(got) >= count

    wait_until(enough, timeout=timeout, message=f"{count} access log lines in {path}")
    return got


def test_combined_lines_for_app_static_and_error_responses(tandem_factory, tmp_path):
    log = tmp_path / "access.log"
    static = tmp_path / "files"
    static.mkdir()
    (static / "a.txt").write_bytes(b"0123456789")
    t = tandem_factory(
        "wsgi_app:app", "--access-logfile", str(log), "--static", f"/s/={static}", workers=1
    )

    pid = int(t.get("/pid").body)
    r = t.request(
        "GET", "/hello?x=1", headers={"Referer": "http://ref/", "User-Agent": 'agent "quoted"'}
    )
    assert r.status == 200
    assert t.get("/s/a.txt").body == b"0123456789"
    assert t.get("/s/missing").status == 404
    t.request("GET", "/hello", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"})  # alice:secret

    entries = [COMBINED.match(line) for line in lines_of(log, 5)]
    assert all(entries), lines_of(log, 5)
    pid_line, hello, static_hit, static_miss, auth = entries
    assert pid_line["request"] == "GET /pid HTTP/1.1" and pid_line["worker"] == str(pid)
    assert int(pid_line["bytes"]) == len(str(pid))

    assert hello["addr"] == "127.0.0.1" and hello["user"] == "-"
    assert hello["request"] == "GET /hello?x=1 HTTP/1.1" and hello["status"] == "200"
    assert int(hello["bytes"]) == len(r.body)
    assert hello["referer"] == "http://ref/" and hello["agent"] == "agent \\x22quoted\\x22"
    assert float(hello["seconds"]) < 5

    assert (
        static_hit["status"] == "200"
        and static_hit["bytes"] == "10"
        and static_hit["worker"] == "-"
    )
    assert static_miss["status"] == "404" and static_miss["worker"] == "-"
    assert auth["user"] == "alice"


def test_json_lines(tandem_factory, tmp_path):
    log = tmp_path / "access.json"
    t = tandem_factory(
        "wsgi_app:app", "--access-logfile", str(log), "--access-log-format", "json", workers=1
    )
    r = t.request("POST", "/echo", body=b"x" * 100, headers={"User-Agent": 'tester "q" \\ back'})
    assert r.status == 200
    entry = json.loads(lines_of(log, 1)[0])
    assert (
        entry["method"] == "POST" and entry["target"] == "/echo" and entry["protocol"] == "HTTP/1.1"
    )
    assert entry["status"] == 200 and entry["bytes_sent"] == len(r.body)
    assert entry["remote_addr"] == "127.0.0.1" and entry["remote_user"] is None
    assert entry["user_agent"] == 'tester "q" \\ back'
    assert entry["referer"] is None and isinstance(entry["worker_pid"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["time"])
    assert 0 <= entry["request_time"] < 5


def test_the_forwarded_client_address_is_logged(tandem_factory, tmp_path):
    log = tmp_path / "access.log"
    t = tandem_factory("wsgi_app:app", "--access-logfile", str(log), workers=1)
    t.request("GET", "/hello", headers={"X-Forwarded-For": "203.0.113.7"})
    assert lines_of(log, 1)[0].startswith("203.0.113.7 - - [")


def test_a_streamed_response_logs_the_bytes_sent(tandem_factory, tmp_path):
    log = tmp_path / "access.log"
    t = tandem_factory("wsgi_app:app", "--access-logfile", str(log), workers=1)
    r = t.get("/big")
    assert r.status == 200 and len(r.body) > 1024 * 1024
    entry = COMBINED.match(lines_of(log, 1)[0])
    assert int(entry["bytes"]) == len(r.body)


def test_requests_refused_before_their_head_was_read_are_logged(tandem_factory, tmp_path):
    log = tmp_path / "access.log"
    t = tandem_factory(
        "wsgi_app:app", "--access-logfile", str(log), "--limit-request-line", "100", workers=1
    )
    [long] = t.exchange(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert long.status == 414
    [bad] = t.exchange(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n")
    assert bad.status == 400
    entries = [COMBINED.match(line) for line in lines_of(log, 2)]
    # Each is logged when its connection closes, so either may come first.
    assert sorted((e["request"], e["status"], int(e["bytes"])) for e in entries) == [
        ("-", "400", len(bad.body)),
        ("-", "414", len(long.body)),
    ]
    assert all(e["addr"] == "127.0.0.1" and e["worker"] == "-" for e in entries)


def test_stdout(tandem_factory, tmp_path):
    out = tmp_path / "stdout.txt"
    with open(out, "wb") as f:
        t = tandem_factory("wsgi_app:app", "--access-logfile", "-", workers=1, stdout=f)
        t.get("/hello")
        assert COMBINED.match(lines_of(out, 1)[0])


def test_usr1_reopens_the_file_after_rotation(tandem_factory, tmp_path):
    log = tmp_path / "access.log"
    t = tandem_factory("wsgi_app:app", "--access-logfile", str(log), workers=1)
    t.get("/hello?before")
    lines_of(log, 1)
    os.rename(log, tmp_path / "access.log.1")
    mark = t.mark()
    t.signal(signal.SIGUSR1)
    t.wait_for_log("access log reopened", since=mark)
    t.get("/hello?after")
    assert "/hello?after" in lines_of(log, 1)[0]
    rotated = (tmp_path / "access.log.1").read_text()
    assert "/hello?before" in rotated and "/hello?after" not in rotated


def test_no_access_log_by_default(tandem_factory, tmp_path):
    t = tandem_factory(
        "wsgi_app:app",
        workers=1,
        cwd=tmp_path,
        env={"PYTHONPATH": os.path.dirname(__file__) + "/apps"},
    )
    t.get("/hello")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, code, message",
    [
        (
            ["--access-logfile", "/no/such/dir/access.log"],
            1,
            "cannot open the access log /no/such/dir/access.log",
        ),
        (["--access-log-format", "xml"], 2, "--access-log-format"),
    ],
)
def test_bad_access_log_flags(args, code, message):
    r = run_tandem([*args, "wsgi_app:app"])
    assert r.returncode == code, r.stderr
    assert message in r.stderr, r.stderr
    assert len([line for line in r.stderr_lines if "error" in line]) == 1, r.stderr
