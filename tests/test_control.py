"""The control socket: `tandem ctl status|reload|stop|workers` and `tandem top`."""

import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import APPS, TANDEM_BIN, Tandem, clean_env, wait_until


def ctl(sock, *args, timeout=15):
    return subprocess.run(
        [TANDEM_BIN, "ctl", "-s", str(sock), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )


def status(sock):
    r = ctl(sock, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def controlled(tmp_path):
    sock = tmp_path / "ctl.sock"
    t = Tandem("wsgi_app:app", "--control-socket", str(sock), workers=2)
    t.sock = sock
    try:
        t.wait_for_log("control socket at " + str(sock))
        yield t
    finally:
        t.stop()


def test_socket_is_owner_only_and_removed_at_exit(tmp_path):
    sock = tmp_path / "c.sock"
    t = Tandem("wsgi_app:app", "--control-socket", str(sock), workers=1)
    try:
        mode = stat.S_IMODE(os.stat(sock).st_mode)
        assert mode == 0o600
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
    finally:
        t.stop()
    assert not sock.exists()


def test_default_socket_is_named_after_the_pid(tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    t = Tandem("wsgi_app:app", workers=1, env=env)
    try:
        sock = tmp_path / f"tandem-{t.master_pid}.sock"
        t.wait_for_log(f"control socket at {sock}")
        # `tandem ctl` finds the only running tandem there on its own.
        r = subprocess.run(
            [TANDEM_BIN, "ctl", "status"],
            capture_output=True,
            text=True,
            timeout=15,
            env=clean_env(env),
        )
        assert r.returncode == 0, r.stderr
        assert f"pid {t.master_pid}" in r.stdout
    finally:
        t.stop()


def test_status_describes_master_and_workers(controlled):
    t = controlled
    assert t.get("/hello").status == 200
    s = status(t.sock)
    assert s["pid"] == t.master_pid
    assert s["app"] == "wsgi_app:app"
    assert s["target_workers"] == 2
    pids = {w["pid"] for w in s["workers"]}
    assert pids == t.worker_pids()
    assert sum(w["served"] for w in s["workers"]) == 1
    assert all(w["state"] == "idle" and w["rss_bytes"] > 0 for w in s["workers"])
    assert s["requests_total"] == 1
    # The human form names every worker.
    text = ctl(t.sock, "status").stdout
    for pid in pids:
        assert str(pid) in text


def test_status_shows_the_current_request(controlled, tmp_path):
    t = controlled
    mark = tmp_path / "mark"
    conn = t.connection()
    conn.request("GET", f"/sleep?s=2&mark={mark}")
    wait_until(mark.exists, message="the app to start sleeping")
    busy_pid = int(mark.read_text())
    s = status(t.sock)
    busy = [w for w in s["workers"] if w["state"] == "busy"]
    assert [w["pid"] for w in busy] == [busy_pid]
    assert busy[0]["current"]["request"] == "GET /sleep"
    assert conn.getresponse().status == 200
    conn.close()


def test_workers_plus_and_minus(controlled):
    t = controlled
    r = ctl(t.sock, "workers", "+1")
    assert r.returncode == 0, r.stderr
    assert "going to 3 workers" in r.stdout
    wait_until(lambda: len(status(t.sock)["workers"]) == 3, message="3 workers in status")
    t.wait_workers(3)
    r = ctl(t.sock, "workers", "-2")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: len(status(t.sock)["workers"]) == 1, message="1 worker in status")
    assert status(t.sock)["target_workers"] == 1


def test_reload_makes_a_new_generation(controlled):
    t = controlled
    before = {w["pid"] for w in status(t.sock)["workers"]}
    r = ctl(t.sock, "reload")
    assert r.returncode == 0, r.stderr
    assert "generation 2" in r.stdout

    def reloaded():
        s = status(t.sock)
        return (
            s["generation"] == 2
            and len(s["workers"]) == 2
            and not ({w["pid"] for w in s["workers"]} & before)
        )

    wait_until(reloaded, timeout=20, message="generation 2 serving alone")
    assert t.get("/hello").status == 200


def test_stop_stops_gracefully(controlled):
    t = controlled
    r = ctl(t.sock, "stop")
    assert r.returncode == 0, r.stderr
    assert t.wait_exit() == 0
    assert "stopped" in t.log


def test_bad_requests_get_an_error_line(controlled):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(controlled.sock))
        f = s.makefile("rwb")
        for line, why in [
            (b"hello\n", "not a JSON object"),
            (b'{"cmd":"fly"}\n', "unknown command"),
        ]:
            f.write(line)
            f.flush()
            answer = json.loads(f.readline())
            assert answer["ok"] is False and why in answer["error"]
        # The connection still works after errors.
        f.write(b'{"cmd":"status"}\n')
        f.flush()
        assert json.loads(f.readline())["ok"] is True


def test_ctl_errors_are_one_line(tmp_path):
    r = ctl(tmp_path / "nothing.sock", "status")
    assert r.returncode == 1
    assert r.stderr.startswith("tandem ctl: error: cannot connect")
    assert len(r.stderr.strip().splitlines()) == 1
    r = ctl(tmp_path / "nothing.sock", "workers", "0")
    assert r.returncode == 2


def test_top_shows_workers_in_tmux(controlled):
    if not shutil.which("tmux"):
        pytest.fail("tmux is missing: run scripts/install-test-deps.sh")
    t = controlled
    session = f"tandem-top-{os.getpid()}"
    sock = Path(t.sock)
    tmux = ["tmux", "-L", session]
    subprocess.run(
        [
            *tmux,
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "160",
            "-y",
            "40",
            f"{TANDEM_BIN} top -s {sock}; sleep 30",
        ],
        check=True,
        env=clean_env({"TERM": "xterm"}),
        cwd=APPS,
    )
    try:
        for _ in range(3):
            assert t.get("/hello").status == 200

        def screen():
            return subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout

        pids = t.worker_pids()
        wait_until(
            lambda: all(str(p) in screen() for p in pids),
            timeout=10,
            message="worker pids on screen",
        )
        text = screen()
        assert "req/s (1 min)" in text and "p99 (1 min)" in text and "queue: 0" in text
        # It refreshes: a new worker shows up within a couple of seconds.
        ctl(t.sock, "workers", "+1")
        t.wait_workers(3)
        wait_until(
            lambda: all(str(p) in screen() for p in t.worker_pids()),
            timeout=10,
            message="the new worker on screen",
        )
        subprocess.run([*tmux, "send-keys", "-t", session, "q"], check=True)
        wait_until(lambda: "PID" not in screen(), timeout=10, message="top to quit on q")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
