"""Zero-downtime binary upgrade: USR2 starts a new tandem on the same
listening sockets; once it serves, the old one drains and exits. A client
hammering the server meanwhile loses no request."""

import os
import signal
import socket
import threading
import time
import urllib.request

from conftest import RawConn, Tandem, process_state, wait_for_file, wait_until

LOAD_LIMIT = 30.0  # seconds: the load loop never runs longer than this
MAX_REQUESTS = 20_000


def one_request(address):
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    if not data:
        raise ConnectionResetError("closed without an answer")
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b" ", 2)[1], body


class Load(threading.Thread):
    """Requests in a loop, each on a new connection, until stopped (bounded
    in count and time); records every outcome."""

    def __init__(self, address):
        super().__init__(daemon=True)
        self.address = address
        self.stop_flag = threading.Event()
        self.ok = 0
        self.failures = []
        self.worker_pids = set()

    def run(self):
        deadline = time.monotonic() + LOAD_LIMIT
        for _ in range(MAX_REQUESTS):
            if self.stop_flag.is_set() or time.monotonic() > deadline:
                return
            try:
                status, body = one_request(self.address)
            except OSError as e:
                self.failures.append(repr(e))
                continue
            if status == b"200":
                self.ok += 1
                self.worker_pids.add(body.strip())
            else:
                self.failures.append(status)


def test_usr2_hands_over_without_losing_a_request(tmp_path):
    pid_file = tmp_path / "tandem.pid"
    t = Tandem("wsgi_app:app", "--pid", str(pid_file), "--metrics-bind", "127.0.0.1:0", workers=2)
    try:
        wait_for_file(pid_file)
        metrics_url = t.wait_for_log(r"metrics on (http://\S+)").group(1)
        old = t.master_pid
        old_workers = t.worker_pids()
        load = Load(t.address)
        load.start()
        wait_until(lambda: load.ok >= 20, message="load to get going")

        t.signal(signal.SIGUSR2)
        # The old master moves its pid file aside; the new one writes its own.
        oldbin = tmp_path / "tandem.pid.oldbin"

        def new_pid():
            try:
                pid = int(pid_file.read_text())
            except (OSError, ValueError):
                return None
            return pid if pid != old else None

        new = wait_until(new_pid, timeout=20, message="the new master's pid file")
        t.wait_for_log(rf"took over the listening sockets from tandem {old}", timeout=20)
        assert t.wait_exit(timeout=20) == 0  # the old master drained and stopped
        assert process_state(new) not in (None, "Z")
        assert not oldbin.exists()
        served_before = load.ok
        wait_until(
            lambda: load.ok >= served_before + 20, message="the new tandem to serve the load"
        )
        load.stop_flag.set()
        load.join(LOAD_LIMIT)

        assert load.failures == [], load.failures[:5]
        old_pids = {str(p).encode() for p in old_workers}
        assert load.worker_pids & old_pids, "no request reached the old workers"
        assert load.worker_pids - old_pids, "no request reached the new workers"
        assert "listening sockets stay open in the new tandem" in t.log
        # The metrics listener moved over too: same address, new master.
        assert t.log.count(f"metrics on {metrics_url}") == 2, t.log
        with urllib.request.urlopen(metrics_url, timeout=10) as resp:
            assert b"tandem_workers" in resp.read()
    finally:
        load_pids = []
        try:
            pid = int(pid_file.read_text())
            load_pids.append(pid)
        except (OSError, ValueError):
            pass
        t.stop()
        for pid in load_pids:  # the new master is in our group too; make sure
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_failed_upgrade_keeps_the_old_master(tmp_path):
    """A new tandem that can't start (here: the app stops importing) leaves
    the old one serving, with its pid file back in place."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "upgradable.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'v1']\n"
    )
    pid_file = tmp_path / "t.pid"
    t = Tandem("upgradable:app", "--pid", str(pid_file), workers=1, cwd=app_dir)
    try:
        wait_for_file(pid_file)
        (app_dir / "upgradable.py").write_text("raise ImportError('broken release')\n")
        mark = t.mark()
        t.signal(signal.SIGUSR2)
        t.wait_for_log(r"upgrade failed: new tandem \d+ exited", since=mark, timeout=20)
        assert pid_file.read_text() == f"{t.master_pid}\n"
        assert t.get("/").body == b"v1"
    finally:
        t.stop()


def test_upgrade_on_a_unix_socket_keeps_its_file(tmp_path):
    """The new tandem serves the same unix socket, and removes its file when
    it stops in the end; the old one leaves it alone."""
    path = tmp_path / "t.sock"
    pid_file = tmp_path / "t.pid"
    t = Tandem("wsgi_app:app", "--pid", str(pid_file), binds=(f"unix:{path}",), workers=1)
    try:
        old = t.master_pid
        t.signal(signal.SIGUSR2)
        t.wait_for_log(rf"took over the listening sockets from tandem {old}", timeout=20)
        assert t.wait_exit(timeout=20) == 0
        new = int(pid_file.read_text())
        assert path.exists()
        with RawConn(str(path)) as c:
            c.send(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.read_response().status == 200
        os.kill(new, signal.SIGTERM)
        wait_until(
            lambda: process_state(new) in (None, "Z"), timeout=15, message="the new master to stop"
        )
        assert not path.exists()
        assert not pid_file.exists()
    finally:
        t.stop()
