"""Raw-request fixtures: every tests/requests/NAME.http is sent byte for byte
to the real binary over a raw socket, and the answer must match NAME.expect.

An `.expect` file holds `key: value` lines:

- `status: 200 400` — the status of each response, in order (no more may come);
- `close: yes|no` — whether the server must close the connection afterwards;
- `app: N` — how many requests reached the app (the app appends one line per
  request to a log file, so a rejected or smuggled request shows up here);
- `methods: GET HEAD` — the method of each request, needed to read HEAD answers;
- `echo.FIELD[.KEY]: value` — a field of the /echo JSON in the last 200 response.

The fixture server runs with small limits (below) so the limit fixtures stay small.
"""

import json
import socket
from pathlib import Path

import pytest
from conftest import RawConn, serving

REQUESTS = Path(__file__).resolve().parent / "requests"
FIXTURES = sorted(p.stem for p in REQUESTS.glob("*.http"))
LIMITS = (
    "--limit-request-line", "1024",
    "--limit-request-fields", "20",
    "--limit-request-field-size", "1024",
    "--max-request-body", "4096",
)  # fmt: skip


@pytest.fixture(scope="module")
def fixture_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("requests") / "app.log"
    log.touch()
    with serving("wsgi_app:app", *LIMITS, "-e", f"TANDEM_TEST_REQUEST_LOG={log}", workers=1) as t:
        t.request_log = log
        yield t


def parse_expect(path):
    expect = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(":")
        expect[key.strip()] = value[1:] if value.startswith(" ") else value
    return expect


def app_requests(server):
    return len(server.request_log.read_text().splitlines())


def closed_by_server(conn):
    """True if the server closes the connection (EOF, or a reset) with nothing more sent."""
    conn.settimeout(5)
    try:
        rest = conn.read_until_close()
    except ConnectionResetError:
        return True
    assert rest == b"", f"unexpected bytes after the last response: {rest[:200]!r}"
    return True


def still_open(conn):
    """True if the connection stays open and silent for a moment."""
    conn.settimeout(0.3)
    try:
        data = conn.sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    assert data == b"", f"unexpected bytes after the last response: {data!r}"
    return False


def final_response(conn, method):
    """The next final response; interim (1xx) ones such as 100 Continue are skipped."""
    for _ in range(5):
        response = conn.read_response(method)
        if response.status >= 200:
            return response
    raise AssertionError("more than 5 interim responses")


def test_every_fixture_has_an_expectation():
    for name in FIXTURES:
        assert (REQUESTS / f"{name}.expect").is_file(), name
    assert len(FIXTURES) >= 60


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture(fixture_server, name):
    data = (REQUESTS / f"{name}.http").read_bytes()
    expect = parse_expect(REQUESTS / f"{name}.expect")
    statuses = [int(s) for s in expect["status"].split()]
    methods = expect.get("methods", "").split() or ["GET"] * len(statuses)
    before = app_requests(fixture_server)

    with RawConn(fixture_server.address, timeout=10) as conn:
        conn.send(data)
        responses = [final_response(conn, m) for m in methods[: len(statuses)]]
        assert [r.status for r in responses] == statuses, responses
        if expect["close"] == "yes":
            assert closed_by_server(conn)
            last = responses[-1]
            if last.status >= 400 or last.version == "HTTP/1.1":
                assert (last.get("Connection") or "").lower() == "close", last
        else:
            assert still_open(conn), "the server closed a connection that should stay open"

    reached = app_requests(fixture_server) - before
    assert reached == int(expect["app"]), fixture_server.request_log.read_text()
    fields = {k[len("echo.") :]: v for k, v in expect.items() if k.startswith("echo.")}
    if fields:
        seen = json.loads([r for r in responses if r.status == 200][-1].body)
        for key, want in fields.items():
            value = seen
            for part in key.split("."):
                value = value[part]
            assert str(value) == want, (key, value, want)
