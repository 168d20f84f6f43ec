"""End-to-end helpers: start the real `tandem` binary and talk to it over real sockets.

`Tandem` starts the command in its own process group, collects its stderr in a
background thread, and waits for one `listening on ...` line per listener
(which tandem prints only once every worker has loaded the app).
"""

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
TANDEM_BIN = os.environ.get("TANDEM_BIN") or str(Path(sys.executable).parent / "tandem")
READY_TIMEOUT = 20.0

LISTEN_RE = re.compile(r"listening on (https?://\S+|unix:\S+)")

# Variables that change tandem's defaults; tests set them explicitly when they need them.
_SCRUBBED_ENV = ("PORT", "WEB_CONCURRENCY", "SCRIPT_NAME", "FORWARDED_ALLOW_IPS")


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(extra or {})
    return env


class Completed:
    def __init__(self, returncode, stdout, stderr, elapsed):
        self.returncode = returncode  # None: still running at the timeout (then killed)
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed

    @property
    def stderr_lines(self):
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_tandem(args, timeout=20, cwd=APPS, env=None):
    """Runs tandem until it exits on its own; kills its process group after `timeout`."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [TANDEM_BIN, *args],
        cwd=str(cwd),
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stray workers of our group, if any
    except (ProcessLookupError, PermissionError):
        pass
    return Completed(code, out, err, time.monotonic() - start)


class Response:
    """A parsed HTTP response read from a raw socket."""

    def __init__(self, version, status, reason, headers, body, chunked):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value), as sent
        self.body = body
        self.chunked = chunked

    def get(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def get_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} {self.body[:200]!r}>"


class RawConn:
    """A client socket for sending exact bytes and parsing responses one by one."""

    def __init__(self, address, timeout=15.0):
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(address)
        else:
            self.sock = socket.create_connection(address, timeout=timeout)
        self.f = self.sock.makefile("rb")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.f.close()
        finally:
            self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)

    def _line(self):
        line = self.f.readline(65537)
        if not line:
            raise ConnectionError("connection closed by the server")
        return line

    def read_head(self):
        """Reads the status line and headers; returns (version, status, reason, headers)."""
        status_line = self._line().decode("latin-1").rstrip("\r\n")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        headers = []
        while True:
            line = self._line().decode("latin-1")
            if line in ("\r\n", "\n"):
                break
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
        return version, int(code), reason, headers

    def read_chunk(self):
        """Reads one chunk of a chunked body; b'' for the last one (trailers consumed)."""
        size = int(self._line().split(b";")[0].strip(), 16)
        if size == 0:
            while self._line() not in (b"\r\n", b"\n"):
                pass
            return b""
        data = self.f.read(size)
        assert len(data) == size, "connection closed inside a chunk"
        assert self.f.read(2) == b"\r\n", "chunk not followed by CRLF"
        return data

    def read_response(self, method="GET"):
        version, status, reason, headers = self.read_head()
        resp = Response(version, status, reason, headers, b"", False)
        te = (resp.get("Transfer-Encoding") or "").lower()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return resp
        if "chunked" in te:
            resp.chunked = True
            parts = []
            while True:
                chunk = self.read_chunk()
                if not chunk:
                    break
                parts.append(chunk)
            resp.body = b"".join(parts)
        elif resp.get("Content-Length") is not None:
            n = int(resp.get("Content-Length"))
            resp.body = self.f.read(n)
            assert len(resp.body) == n, f"body shorter than Content-Length: {resp!r}"
        else:
            resp.body = self.f.read()
        return resp

    def read_until_close(self):
        return self.f.read()


class HTTPResult:
    def __init__(self, status, reason, headers, body, version):
        self.status = status
        self.reason = reason
        self.headers = headers  # http.client.HTTPMessage
        self.body = body
        self.version = version

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<HTTPResult {self.status} {self.body[:300]!r}>"


class Tandem:
    """One running `tandem` process (the master) and its workers."""

    def __init__(
        self,
        app="wsgi_app:app",
        *args,
        binds=("127.0.0.1:0",),
        workers=2,
        cwd=APPS,
        env=None,
        expect_listeners=None,
        pass_fds=(),
        wait=True,
        stdout=subprocess.DEVNULL,
        prefix=(),
    ):
        # app=None: no APP_MODULE argument (it comes from a --config file, or
        # tandem runs without an app). prefix: a command to run tandem under,
        # e.g. ("ip", "netns", "exec", NAME).
        self.app = app
        cmd = [*prefix, TANDEM_BIN]
        for b in binds:
            cmd += ["-b", b]
        if workers is not None:
            cmd += ["-w", str(workers)]
        cmd += [*args, *([app] if app else [])]
        self.cmd = cmd
        self.expect_listeners = len(binds) if expect_listeners is None else expect_listeners
        self.lines = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(cwd),
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=pass_fds,
        )
        self.pgid = self.proc.pid  # start_new_session: the master leads its own group
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.listeners = []
        if wait:
            self.wait_ready()

    # -- logs ---------------------------------------------------------------

    def _read_stderr(self):
        for raw in iter(self.proc.stderr.readline, b""):
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    _eof = False

    @property
    def log(self):
        with self._cond:
            return "\n".join(self.lines)

    def mark(self):
        """Index of the next log line: pass to wait_for_log/log_since to look only at new lines."""
        with self._cond:
            return len(self.lines)

    def log_since(self, mark):
        with self._cond:
            return "\n".join(self.lines[mark:])

    def wait_for_log(self, pattern, timeout=10.0, since=0):
        """Waits for a log line matching `pattern` (regex); returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            i = since
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    break
                self._cond.wait(min(left, 0.2))
        raise AssertionError(
            f"no log line matching {pattern!r} within {timeout}s; log:\n{self.log}"
        )

    def wait_eof(self, timeout=10.0):
        self._reader.join(timeout)

    # -- lifecycle ------------------------------------------------------------

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        found = []
        with self._cond:
            i = 0
            while True:
                while i < len(self.lines):
                    m = LISTEN_RE.search(self.lines[i])
                    if m:
                        found.append(m.group(1))
                    i += 1
                if len(found) >= self.expect_listeners:
                    break
                if self._eof or self.proc.poll() is not None:
                    self._cond.wait(0.5)  # let the reader drain the last lines
                    raise AssertionError(
                        f"tandem exited (code {self.proc.poll()}) before listening;"
                        f" command {self.cmd}; log:\n" + "\n".join(self.lines)
                    )
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"tandem not listening after {timeout}s; log:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(0.1)
        self.listeners = found
        return self

    def signal(self, sig):
        """Sends `sig` to the master only."""
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout=15.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"tandem still running {timeout}s later; log:\n{self.log}"
            ) from None

    def stop(self, timeout=10.0):
        """SIGTERM to our process group, then SIGKILL to it if it doesn't exit."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pgid, signal.SIGKILL)  # leftovers of our group only
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(5)
        if self.proc.stderr:
            self.proc.stderr.close()

    # -- addresses ----------------------------------------------------------

    @property
    def http_listener(self):
        for listener in self.listeners:
            if listener.startswith(("http://", "https://")):
                return listener
        raise AssertionError(f"no TCP listener in {self.listeners}")

    @property
    def host(self):
        host = self.http_listener.partition("://")[2].rpartition(":")[0]
        return host.strip("[]")

    @property
    def port(self):
        return int(self.http_listener.rpartition(":")[2])

    @property
    def address(self):
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return (host, self.port)

    @property
    def url(self):
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    # -- processes ----------------------------------------------------------

    @property
    def master_pid(self):
        return self.proc.pid

    def worker_pids(self):
        """Live (non-zombie) children of the master."""
        pids = set()
        try:
            tasks = os.listdir(f"/proc/{self.master_pid}/task")
        except FileNotFoundError:
            return pids
        for tid in tasks:
            try:
                with open(f"/proc/{self.master_pid}/task/{tid}/children") as f:
                    pids.update(int(p) for p in f.read().split())
            except (FileNotFoundError, ProcessLookupError):
                pass
        return {p for p in pids if process_state(p) not in (None, "Z")}

    def wait_workers(self, count, exclude=(), timeout=15.0):
        """Waits until exactly `count` live workers, none of them in `exclude`."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.worker_pids()
            if len(pids) == count and not (pids & set(exclude)):
                return pids
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"workers {pids}, wanted {count} not in {set(exclude)}; log:\n{self.log}"
                )
            time.sleep(0.05)

    def rss_kib(self, pid=None):
        with open(f"/proc/{pid or self.master_pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    # -- clients ------------------------------------------------------------

    def raw(self, timeout=15.0):
        return RawConn(self.address, timeout)

    def exchange(self, data, methods=("GET",), timeout=15.0):
        """Sends exact bytes on a new connection and reads len(methods) responses."""
        with self.raw(timeout) as c:
            c.send(data)
            return [c.read_response(m) for m in methods]

    def connection(self, timeout=30.0):
        host, port = self.address
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=30.0):
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return HTTPResult(resp.status, resp.reason, resp.headers, data, resp.version)
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body=body, **kw)


def process_state(pid):
    """The one-letter state of a process (R, S, Z, ...), or None if it doesn't exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def wait_until(predicate, timeout=10.0, interval=0.02, message="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def wait_for_file(path, timeout=10.0):
    return wait_until(lambda: os.path.exists(path), timeout, message=f"file {path}")


def ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tandem_factory():
    """Starts dedicated servers for one test; all stopped at teardown."""
    started = []

    def start(*args, wait=True, **kwargs):
        t = Tandem(*args, wait=False, **kwargs)
        started.append(t)  # registered before waiting, so a failed start is cleaned up too
        if wait:
            t.wait_ready()
        return t

    yield start
    for t in started:
        t.stop()


@pytest.fixture(scope="session")
def server():
    """The shared server: tests/apps/wsgi_app.py with 2 workers."""
    t = Tandem("wsgi_app:app", workers=2, wait=False)
    try:
        t.wait_ready()
        yield t
    finally:
        t.stop()


@contextlib.contextmanager
def serving(*args, **kwargs):
    """A server for a `with` block (module-scoped fixtures); always stopped."""
    t = Tandem(*args, wait=False, **kwargs)
    try:
        t.wait_ready()
        yield t
    finally:
        t.stop()


@pytest.fixture(scope="session")
def django_site(tmp_path_factory):
    """A private, set-up copy of examples/django_site (see tests/django_site.py)."""
    from django_site import prepare

    return prepare(tmp_path_factory.mktemp("site"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item (`item.rep_call`), so a
    fixture can tell in its teardown whether the test failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
