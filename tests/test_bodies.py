"""Request bodies: wsgi.input's API, chunked and large (spilled) uploads, --max-request-body."""

import hashlib
import os
import socket
import threading
import time

import pytest

BODY = b"abcdef\nghij\nklm\nnop"


def test_input_read_readline_readlines(server):
    r = server.post("/input?op=mix", BODY)
    assert r.status == 200
    assert r.json() == {
        "read3": "abc",
        "readline": "def\n",
        "readline2": "gh",
        "readline_rest": "ij\n",
        "readlines": ["klm\n", "nop"],
        "read_eof": "",
        "read5_eof": "",
        "readline_eof": "",
    }


def test_input_iteration(server):
    r = server.post("/input?op=iter", BODY)
    assert r.json() == {"lines": ["abcdef\n", "ghij\n", "klm\n", "nop"]}


def test_input_read_n_never_exceeds_n(server):
    r = server.post("/input?op=readn&n=4", BODY)
    out = r.json()
    assert out["body"] == BODY.decode()
    assert all(s <= 4 for s in out["sizes"])


def test_input_readlines_hint(server):
    r = server.post("/input?op=readlines-hint", BODY)
    out = r.json()
    # readlines(hint) stops once at least `hint` bytes are read; the rest stays readable.
    assert out["lines"] and "".join(out["lines"]) + out["rest"] == BODY.decode()
    assert out["lines"][0] == "abcdef\n"


def test_input_on_chunked_body(server):
    data = (
        b"POST /input?op=mix HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (1, BODY[i : i + 1]) for i in range(len(BODY)))
        + b"0\r\n\r\n"
    )
    (r,) = server.exchange(data, methods=("POST",))
    assert r.json()["readlines"] == ["klm\n", "nop"]


def test_input_on_spilled_body(server):
    # Above 1 MiB the front spills the body to a temp file: the API must behave the same.
    lines = [b"line %d %s\n" % (i, b"x" * (i % 50)) for i in range(60000)]
    body = b"".join(lines)
    assert len(body) > 2 * 1024 * 1024
    r = server.post("/input?op=lines", body)
    assert r.json() == {"count": len(lines), "sha256": hashlib.sha256(body).hexdigest()}
    r = server.post("/input?op=readn&n=100000", body)
    out = r.json()
    assert out["body"].encode("latin-1") == body
    assert max(out["sizes"]) <= 100000


def test_empty_post_body(server):
    r = server.post("/echo", b"")
    body = r.json()
    assert body["body"] == ""
    assert body["content_length"] in ("0", "", None)


def test_binary_body_echoed_exactly(server):
    data = bytes(range(256)) * 300
    r = server.post("/upload-echo", data, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200
    assert r.body == data


def test_chunked_spilled_upload_echoed(server):
    data = os.urandom(3 * 1024 * 1024 + 7)
    with server.raw(timeout=30) as c:
        c.send(b"POST /upload-echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(data), 100_000):
            piece = data[i : i + 100_000]
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        c.send(b"0\r\n\r\n")
        r = c.read_response("POST")
    assert r.status == 200
    assert len(r.body) == len(data)
    assert r.body == data


class RssPeak:
    """Samples a process's VmRSS in the background; `growth_mib` is peak minus start."""

    def __init__(self, t):
        self.t = t
        self.baseline = t.rss_kib()
        self.peak = self.baseline
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, self.t.rss_kib())
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(0.005)

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.growth_mib

    @property
    def growth_mib(self):
        return (max(self.peak, self.t.rss_kib()) - self.baseline) / 1024


def _send_upload(c, path, data):
    c.send(
        b"POST %s HTTP/1.1\r\nHost: h\r\nContent-Type: application/octet-stream"
        b"\r\nContent-Length: %d\r\n\r\n" % (path, len(data))
    )
    view = memoryview(data)
    for i in range(0, len(data), 256 * 1024):
        c.send(view[i : i + 256 * 1024])


def _read_body_hash(c, length):
    h = hashlib.sha256()
    received = 0
    while received < length:
        piece = c.f.read(min(1 << 20, length - received))
        assert piece, f"connection closed after {received} of {length} bytes"
        h.update(piece)
        received += len(piece)
    return h.digest()


def test_20mb_upload_echoed_without_growing_the_master(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1)
    assert t.get("/hello").status == 200  # warm up
    size = 20 * 1024 * 1024
    data = os.urandom(size)
    rss = RssPeak(t)
    try:
        with t.raw(timeout=60) as c:
            _send_upload(c, b"/upload-echo", data)
            _, status, _, headers = c.read_head()
            assert status == 200
            length = int(dict((k.lower(), v) for k, v in headers)["content-length"])
            assert length == size
            digest = _read_body_hash(c, length)
    finally:
        growth = rss.stop()
    assert digest == hashlib.sha256(data).digest()
    assert growth < 10, f"master RSS grew by {growth:.1f} MiB for a 20 MiB upload"


def test_20mb_upload_is_spilled_not_held(tandem_factory):
    # The request side alone: the app reads 20 MiB and answers a few bytes.
    t = tandem_factory("wsgi_app:app", workers=1)
    assert t.get("/hello").status == 200
    lines = [b"%07d\n" % i for i in range(20 * 1024 * 1024 // 8)]
    data = b"".join(lines)
    rss = RssPeak(t)
    try:
        with t.raw(timeout=60) as c:
            _send_upload(c, b"/input?op=lines", data)
            r = c.read_response("POST")
    finally:
        growth = rss.stop()
    assert r.json() == {"count": len(lines), "sha256": hashlib.sha256(data).hexdigest()}
    assert growth < 10, f"master RSS grew by {growth:.1f} MiB holding a 20 MiB request"


def test_slow_client_download_frees_the_worker_and_spills(tandem_factory):
    # A client that doesn't read its 20 MiB response must not hold the worker,
    # and the front must not hold the response in memory either.
    t = tandem_factory("wsgi_app:app", workers=1)
    assert t.get("/hello").status == 200
    rss = RssPeak(t)
    try:
        with t.raw(timeout=60) as slow:
            slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            slow.send(b"GET /big?mb=20 HTTP/1.1\r\nHost: h\r\n\r\n")
            # The only worker must be free again while the slow client reads nothing.
            r = t.get("/pid", timeout=15)
            assert r.status == 200
            time.sleep(0.5)  # let the front finish taking the response in
            growth_while_stalled = rss.growth_mib
            _, status, _, headers = slow.read_head()
            assert status == 200
            length = int(dict((k.lower(), v) for k, v in headers)["content-length"])
            assert length == 20 << 20
            h = hashlib.sha256()
            received = 0
            i = 0
            expected = hashlib.sha256()
            while received < length:
                piece = slow.f.read(1 << 20)
                assert len(piece) == 1 << 20
                h.update(piece)
                expected.update(big_chunk(i))
                received += len(piece)
                i += 1
            assert h.digest() == expected.digest()
    finally:
        growth = rss.stop()
    assert growth_while_stalled < 10, (
        f"master RSS grew by {growth_while_stalled:.1f} MiB holding a 20 MiB response"
    )
    assert growth < 10, f"master RSS grew by {growth:.1f} MiB serving a 20 MiB response"


def big_chunk(i):
    return (b"%08d" % i) * (128 * 1024)  # must match tests/apps/wsgi_app.py


@pytest.fixture
def small_limit(tandem_factory):
    return tandem_factory("wsgi_app:app", "--max-request-body", "1000", workers=1)


def test_body_at_the_limit_is_accepted(small_limit):
    r = small_limit.post("/echo", b"x" * 1000)
    assert r.status == 200
    assert r.json()["body"] == "x" * 1000


def test_body_over_the_limit_gets_413(small_limit):
    r = small_limit.post("/echo", b"x" * 1001)
    assert r.status == 413
    assert b"413" in r.body


def test_declared_huge_body_gets_413_before_it_is_sent(small_limit):
    with small_limit.raw(timeout=5) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 50000000\r\n\r\n")
        r = c.read_response("POST")  # no body sent: a 413 must come anyway
    assert r.status == 413


def test_chunked_body_over_the_limit_gets_413(small_limit):
    data = b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    data += b"".join(b"64\r\n" + b"y" * 100 + b"\r\n" for _ in range(11)) + b"0\r\n\r\n"
    with small_limit.raw(timeout=5) as c:
        c.send(data)
        r = c.read_response("POST")
    assert r.status == 413
    # The app never saw it, and the server still serves.
    assert small_limit.get("/hello").status == 200
