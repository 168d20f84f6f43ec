"""The command line: binds, options, start-up errors, signals."""

import os
import re
import signal
import socket
import threading
import time

import pytest
from conftest import (
    APPS,
    RawConn,
    free_port,
    ipv6_loopback_available,
    process_state,
    run_tandem,
    wait_for_file,
)

# -- --help, --version, bad command lines -------------------------------------------


def test_version():
    r = run_tandem(["--version"])
    assert r.returncode == 0
    assert re.fullmatch(r"tandem \d+\.\d+\.\d+\S*\n", r.stdout), r.stdout


def test_help_reads_like_gunicorn_and_explains_the_workers_default():
    r = run_tandem(["--help"])
    assert r.returncode == 0
    out = r.stdout
    assert "APP_MODULE" in out
    for flag in (
        "-b, --bind",
        "-w, --workers",
        "--backlog",
        "--max-request-body",
        "-t, --timeout",
        "--graceful-timeout",
        "--chdir",
        "--pythonpath",
        "-e, --env",
        "--root-path",
        "--log-level",
        "--version",
    ):
        assert flag in out, flag
    workers = out[out.index("-w, --workers") :].split("\n      --")[0]
    assert re.search(r"[Dd]efault", workers), workers
    assert re.search(r"core|CPU", workers), workers


def _one_error_line(r):
    lines = r.stderr_lines
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("tandem: error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--bogus", "wsgi_app:app"], "--bogus"),
        (["-w", "abc", "wsgi_app:app"], "abc"),
        ([], "APP_MODULE"),
        (["--timeout", "-3", "wsgi_app:app"], "-3"),
    ],
)
def test_bad_command_line_is_one_line_and_exit_2(args, needle):
    r = run_tandem(args, timeout=10)
    assert r.returncode == 2, (r.returncode, r.stderr)
    line = _one_error_line(r)
    assert needle in line


@pytest.mark.parametrize(
    "bind",
    [
        "127.0.0.1:99999",
        "127.0.0.1:abc",
        "nohost",
        "256.1.1.1:80",
        "[::1:0",
        "fd://x",
        "fd://999",
        "unix:/nonexistent-dir/tandem.sock",
    ],
)
def test_bad_bind_address_is_one_line_and_non_zero(bind):
    r = run_tandem(["-b", bind, "-w", "1", "wsgi_app:app"], timeout=6)
    assert r.returncode not in (0, None), (r.returncode, r.stderr)
    line = _one_error_line(r)
    assert bind in line
    assert "listening on" not in r.stderr


def test_port_in_use_is_one_line_and_exit_1():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_tandem(["-b", f"127.0.0.1:{port}", "-w", "1", "wsgi_app:app"], timeout=10)
    assert r.returncode == 1, r.stderr
    line = _one_error_line(r)
    assert line.startswith(f"tandem: error: cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in line


# -- start-up failures of the app ------------------------------------------------


def test_import_error_exits_4_with_traceback_and_no_respawn_loop():
    r = run_tandem(["-b", "127.0.0.1:0", "-w", "2", "broken_import:app"], timeout=20)
    assert r.returncode == 4, (r.returncode, r.stderr)
    assert r.elapsed < 10
    assert "Traceback (most recent call last)" in r.stderr
    assert "RuntimeError: import-boom-marker" in r.stderr
    assert "failed to load application 'broken_import:app'" in r.stderr
    # One attempt per worker at most: no respawn loop.
    assert r.stderr.count("RuntimeError: import-boom-marker") <= 2
    assert "listening on" not in r.stderr


@pytest.mark.parametrize(
    "app, needle",
    [
        ("no_attr:missing", "missing"),
        ("no_attr", "application"),
        ("wsgi_app:FILE_BYTES", "not callable"),
        ("module_that_does_not_exist:app", "module_that_does_not_exist"),
    ],
)
def test_app_that_cannot_be_loaded_exits_4(app, needle):
    r = run_tandem(["-b", "127.0.0.1:0", "-w", "2", app], timeout=20)
    assert r.returncode == 4, (r.returncode, r.stderr)
    assert r.elapsed < 10
    assert needle in r.stderr
    assert f"failed to load application '{app}'" in r.stderr
    assert "listening on" not in r.stderr


# -- binds ------------------------------------------------------------------------


def test_module_without_callable_means_application(tandem_factory):
    t = tandem_factory("wsgi_app", workers=1)
    assert t.get("/hello").body == b"Hello, world!\n"


def test_two_tcp_binds_and_a_unix_socket(tandem_factory, tmp_path):
    path = str(tmp_path / "t.sock")
    t = tandem_factory(
        "wsgi_app:app", binds=("127.0.0.1:0", f"unix:{path}", "127.0.0.1:0"), workers=1
    )
    assert f"unix:{path}" in t.listeners
    tcp = [u for u in t.listeners if u.startswith("http://127.0.0.1:")]
    assert len(tcp) == 2 and tcp[0] != tcp[1]
    for url in tcp:
        port = int(url.rpartition(":")[2])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"Hello, world!\n")
    with RawConn(path) as c:
        c.send(b"GET /echo?via=unix HTTP/1.1\r\nHost: localhost\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.json()["query"] == "via=unix"
        c.send(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")  # keep-alive on unix too
        assert c.read_response().body == b"Hello, world!\n"


def test_ipv6_bind(tandem_factory):
    if not ipv6_loopback_available():
        pytest.skip("no ::1 on this machine")
    t = tandem_factory("wsgi_app:app", binds=("[::1]:0",), workers=1)
    assert t.listeners[0].startswith("http://[::1]:")
    with socket.create_connection(("::1", t.port), timeout=10) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert b'"remote_addr": "::1"' in data


def test_port_env_sets_the_default_bind(tandem_factory):
    port = free_port()
    t = tandem_factory(
        "wsgi_app:app", binds=(), expect_listeners=1, workers=1, env={"PORT": str(port)}
    )
    assert t.listeners == [f"http://0.0.0.0:{port}"]
    assert t.get("/hello").status == 200


def test_default_bind_is_localhost_8000(tandem_factory):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8000))
        except OSError:
            pytest.skip("port 8000 is busy on this machine")
    t = tandem_factory("wsgi_app:app", binds=(), expect_listeners=1, workers=1)
    assert t.listeners == ["http://127.0.0.1:8000"]
    assert t.get("/hello").status == 200


def test_inherited_listening_socket_fd(tandem_factory):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        port = s.getsockname()[1]
        fd = s.fileno()
        t = tandem_factory("wsgi_app:app", binds=(f"fd://{fd}",), workers=1, pass_fds=(fd,))
    finally:
        s.close()  # tandem holds its own copy now
    assert t.listeners == [f"http://127.0.0.1:{port}"]
    assert t.get("/hello").body == b"Hello, world!\n"


# -- workers ------------------------------------------------------------------------


def test_worker_count_and_interpreter(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=3)
    pids = t.wait_workers(3)

    def cmdline(pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")

    master_python = cmdline(t.master_pid)[0]
    for pid in pids:
        argv = cmdline(pid)
        assert argv[0] == master_python  # the interpreter that started tandem
        assert b"tandem._worker" in argv
    served = {int(t.get("/pid").body) for _ in range(6)}
    assert served <= pids
    assert t.master_pid not in served  # the master never runs app code


def test_web_concurrency_sets_the_default_worker_count(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=None, env={"WEB_CONCURRENCY": "3"})
    assert len(t.wait_workers(3)) == 3


def test_default_worker_count_is_the_cpu_count(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=None)
    n = len(t.worker_pids())  # all workers are up once tandem listens
    assert n in (len(os.sched_getaffinity(0)), os.cpu_count())


# -- -e, --chdir, --pythonpath ------------------------------------------------------


def test_env_option(tandem_factory):
    t = tandem_factory(
        "wsgi_app:app", "-e", "TANDEM_TEST_FOO=bar", "--env", "TANDEM_TEST_EQ=a=b", workers=1
    )
    assert t.get("/env?name=TANDEM_TEST_FOO").json() == {"value": "bar"}
    assert t.get("/env?name=TANDEM_TEST_EQ").json() == {"value": "a=b"}


def test_chdir(tandem_factory, tmp_path):
    t = tandem_factory("wsgi_app:app", "--chdir", str(APPS), workers=1, cwd=tmp_path)
    assert t.get("/cwd").json()["cwd"] == str(APPS)


def test_pythonpath(tandem_factory, tmp_path):
    d1, d2 = tmp_path / "one", tmp_path / "two"
    d1.mkdir()
    d2.mkdir()
    (d1 / "pp_helper.py").write_text("VALUE = b'from-d1'\n")
    (d2 / "pp_app.py").write_text(
        "from pp_helper import VALUE\n\n\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [VALUE]\n"
    )
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    t = tandem_factory("pp_app:app", "--pythonpath", f"{d1},{d2}", workers=1, cwd=run_dir)
    assert t.get("/").body == b"from-d1"


# -- signals ------------------------------------------------------------------------


def _background_get(t, path, results):
    def run():
        try:
            r = t.get(path, timeout=30)
            results.append((r.status, r.body))
        except Exception as e:  # asserted by the test
            results.append(("error", repr(e)))

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def _assert_gone(pids):
    for pid in pids:
        assert process_state(pid) in (None, "Z"), f"worker {pid} outlived the master"


def test_sigterm_finishes_in_flight_requests_and_exits_0(tandem_factory, tmp_path):
    t = tandem_factory("wsgi_app:app", workers=2)
    workers = t.wait_workers(2)
    marker = tmp_path / "busy"
    results = []
    th = _background_get(t, f"/sleep?s=1.5&mark={marker}", results)
    wait_for_file(marker)
    mark = t.mark()
    t.signal(signal.SIGTERM)
    t.wait_for_log(r"stopping", timeout=5, since=mark)
    # No new connections while draining.
    with pytest.raises(OSError):
        with socket.create_connection(t.address, timeout=2) as s:
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
            if not s.recv(1):
                raise ConnectionResetError("closed without an answer")
    th.join(20)
    assert results and results[0][0] == 200, results
    assert results[0][1].startswith(b"slept ")
    assert t.wait_exit(15) == 0
    wait_gone = time.monotonic() + 5
    while time.monotonic() < wait_gone and any(
        process_state(p) not in (None, "Z") for p in workers
    ):
        time.sleep(0.05)
    _assert_gone(workers)


def test_sigterm_when_idle_exits_0_quickly(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=2)
    assert t.get("/hello").status == 200
    start = time.monotonic()
    t.signal(signal.SIGTERM)
    assert t.wait_exit(10) == 0
    assert time.monotonic() - start < 3


def test_connection_accepted_before_sigterm_still_gets_its_answer(tandem_factory):
    # A client that connected just before the stop sends its request a
    # moment later (as every client does): it is answered, then closed.
    t = tandem_factory("wsgi_app:app", workers=1)
    t.wait_workers(1)
    with socket.create_connection(t.address, timeout=5) as s:
        time.sleep(0.3)  # accepted by now
        mark = t.mark()
        t.signal(signal.SIGTERM)
        t.wait_for_log(r"stopping", timeout=5, since=mark)
        time.sleep(0.2)
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data
    assert b"connection: close" in data.lower()
    assert t.wait_exit(10) == 0


def test_silent_connection_does_not_hold_the_stop(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1)
    t.wait_workers(1)
    with socket.create_connection(t.address, timeout=10) as s:
        time.sleep(0.3)
        start = time.monotonic()
        t.signal(signal.SIGTERM)
        assert s.recv(1) == b""  # closed without an answer once the grace is over
        assert t.wait_exit(10) == 0
        assert time.monotonic() - start < 6


def test_graceful_timeout_bounds_the_drain(tandem_factory, tmp_path):
    t = tandem_factory("wsgi_app:app", "--graceful-timeout", "1", workers=1)
    workers = t.wait_workers(1)
    marker = tmp_path / "busy"
    results = []
    _background_get(t, f"/sleep?s=20&mark={marker}", results)
    wait_for_file(marker)
    start = time.monotonic()
    t.signal(signal.SIGTERM)
    t.wait_exit(10)
    assert time.monotonic() - start < 5
    time.sleep(0.3)
    _assert_gone(workers)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_sigint_and_sigquit_stop_at_once(tandem_factory, tmp_path, sig):
    t = tandem_factory("wsgi_app:app", workers=1)
    workers = t.wait_workers(1)
    marker = tmp_path / "busy"
    results = []
    th = _background_get(t, f"/sleep?s=20&mark={marker}", results)
    wait_for_file(marker)
    start = time.monotonic()
    t.signal(sig)
    t.wait_exit(10)
    assert time.monotonic() - start < 3
    th.join(10)
    assert results and results[0][0] != 200, results  # the sleeper was not waited for
    time.sleep(0.3)
    _assert_gone(workers)
