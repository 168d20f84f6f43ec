"""systemd integration: socket activation (LISTEN_FDS), sd_notify messages
on $NOTIFY_SOCKET, and the --pid file."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import (
    APPS,
    LISTEN_RE,
    TANDEM_BIN,
    Tandem,
    clean_env,
    free_port,
    wait_for_file,
    wait_until,
)


class Process:
    """A tandem started through a wrapper command, with its stderr collected."""

    def __init__(self, cmd, pass_fds=(), env=None):
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(APPS),
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            pass_fds=pass_fds,
        )
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern_re, timeout=20):
        def found():
            for line in list(self.lines):
                m = pattern_re.search(line)
                if m:
                    return m
            return None

        return wait_until(
            found, timeout=timeout, message=f"{pattern_re.pattern}; log: {self.lines}"
        )

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(5)
        self.reader.join(5)


def get(port, path="/hello"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_socket_activation_with_systemd_socket_activate():
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.fail("systemd-socket-activate is missing: run scripts/install-test-deps.sh")
    port = free_port()
    p = Process([tool, "-l", f"127.0.0.1:{port}", TANDEM_BIN, "-w", "1", "wsgi_app:app"])
    try:
        # The tool starts tandem on the first connection; that connection is
        # served once tandem is up, as with a systemd .socket unit.
        wait_until(
            lambda: any("Listening on" in line for line in p.lines),
            message="the socket to be bound",
        )
        first = get(port)
        assert first.startswith(b"HTTP/1.1 200 OK"), first
        url = p.wait_for(LISTEN_RE).group(1)
        assert url == f"http://127.0.0.1:{port}"
        assert get(port).startswith(b"HTTP/1.1 200 OK")
    finally:
        p.stop()


def test_socket_activation_by_listen_fds_replaces_bind():
    """The test plays systemd: a pre-bound socket as descriptor 3,
    LISTEN_FDS=1 and LISTEN_PID of the process that execs tandem."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    # Like systemd: descriptor 3, and LISTEN_PID set to the pid that then execs tandem.
    launcher = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); os.close(int(sys.argv[1])); "
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='http'); "
        "os.execv(sys.argv[2], sys.argv[2:])"
    )
    cmd = [
        sys.executable,
        "-c",
        launcher,
        str(fd),
        TANDEM_BIN,
        "-b",
        "127.0.0.1:1",
        "-w",
        "1",
        "wsgi_app:app",
    ]
    p = Process(cmd, pass_fds=(fd,))
    listener.close()
    try:
        url = p.wait_for(LISTEN_RE).group(1)
        assert url == f"http://127.0.0.1:{port}"
        assert get(port).startswith(b"HTTP/1.1 200 OK")
        # Workers don't hold the listening socket (it is close-on-exec).
        master = p.proc.pid
        listening = os.readlink(f"/proc/{master}/fd/3")
        workers = set()
        for task in os.listdir(f"/proc/{master}/task"):
            with open(f"/proc/{master}/task/{task}/children") as f:
                workers.update(f.read().split())
        assert workers
        for w in workers:
            held = {os.readlink(f"/proc/{w}/fd/{e}") for e in os.listdir(f"/proc/{w}/fd")}
            assert listening not in held
    finally:
        p.stop()


def test_listen_fds_for_another_pid_are_ignored():
    port = free_port()
    t = Tandem(
        "wsgi_app:app",
        binds=(f"127.0.0.1:{port}",),
        workers=1,
        env={"LISTEN_FDS": "1", "LISTEN_PID": "1"},
    )
    try:
        assert t.port == port
    finally:
        t.stop()


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(20)
    yield s, path
    s.close()


def messages_until(sock, wanted):
    got = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        msg = sock.recv(4096).decode()
        got.append(msg)
        if wanted in msg.splitlines():
            return got
    raise AssertionError(f"no {wanted} in {got}")


def test_sd_notify_ready_reloading_stopping(notify_socket):
    sock, path = notify_socket
    t = Tandem("wsgi_app:app", workers=1, env={"NOTIFY_SOCKET": str(path)})
    try:
        ready = messages_until(sock, "READY=1")[-1].splitlines()
        assert "STATUS=serving with 1 workers" in ready
        t.signal(signal.SIGHUP)
        reloading = messages_until(sock, "RELOADING=1")[-1].splitlines()
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading)
        again = messages_until(sock, "READY=1")[-1].splitlines()
        assert "STATUS=serving generation 2" in again
        t.signal(signal.SIGTERM)
        messages_until(sock, "STOPPING=1")
        assert t.wait_exit() == 0
    finally:
        t.stop()


def test_sd_notify_to_an_abstract_socket():
    name = f"tandem-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(20)
    t = Tandem("wsgi_app:app", workers=1, env={"NOTIFY_SOCKET": "@" + name})
    try:
        messages_until(s, "READY=1")
    finally:
        t.stop()
        s.close()


def test_pid_file_written_and_removed(tmp_path):
    pid_file = tmp_path / "tandem.pid"
    t = Tandem("wsgi_app:app", "--pid", str(pid_file), workers=1)
    try:
        wait_for_file(pid_file)
        assert pid_file.read_text() == f"{t.master_pid}\n"
        t.signal(signal.SIGTERM)
        assert t.wait_exit() == 0
        assert not pid_file.exists()
    finally:
        t.stop()


def test_unwritable_pid_file_is_a_start_error(tmp_path):
    from conftest import run_tandem

    r = run_tandem(["--pid", str(tmp_path / "no" / "such" / "dir.pid"), "-w", "1", "wsgi_app:app"])
    assert r.returncode == 1
    assert "cannot write --pid" in r.stderr


def test_start_failure_leaves_no_pid_file_or_control_socket(tmp_path):
    from conftest import run_tandem

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    pid_file, sock = tmp_path / "t.pid", tmp_path / "c.sock"
    args = ["--pid", str(pid_file), "--control-socket", str(sock), "-b", f"127.0.0.1:{port}"]
    r = run_tandem([*args, "-w", "1", "wsgi_app:app"])
    taken.close()
    assert r.returncode == 1
    assert "cannot listen on" in r.stderr
    assert not pid_file.exists() and not sock.exists()
