"""What the app returns and how the front sends it: write(), exc_info, file_wrapper,
streaming, close(), refused headers and statuses."""

import hashlib
import os
import time

import pytest
from conftest import wait_until

FILE_BYTES = bytes(range(256)) * 1000  # must match tests/apps/wsgi_app.py


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "data.bin"
    data = os.urandom(3 * 1024 * 1024 + 123)
    path.write_bytes(data)
    return str(path), data


def test_write_callable(server):
    r = server.get("/write")
    assert r.status == 200
    assert r.body == b"part1,part2,part3"


def test_exc_info_replaces_unsent_headers(server):
    r = server.get("/exc-info")
    assert r.status == 500
    assert r.body == b"custom error page"
    assert r.headers["X-Custom-Error"] == "1"
    assert r.headers.get("X-Discarded") is None


def test_exc_info_after_headers_sent_reraises(server):
    r = server.get("/exc-info-after-write")
    assert r.status == 200
    assert r.body == b"partial;reraised:'original'"


def test_file_wrapper_real_file(server, big_file):
    path, data = big_file
    r = server.get(f"/file?path={path}")
    assert r.status == 200
    assert r.headers["Content-Length"] == str(len(data))
    assert len(r.body) == len(data)
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(data).digest()


def test_file_wrapper_starts_at_current_position(server, big_file):
    path, data = big_file
    r = server.get(f"/file?path={path}&seek=1000")
    assert r.status == 200
    assert r.body == data[1000:]


def test_file_wrapper_stops_at_content_length(server, big_file):
    path, data = big_file
    with server.raw() as c:
        c.send(f"GET /file?path={path}&cl=100000 HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        r = c.read_response()
        assert r.body == data[:100000]
        # Nothing beyond Content-Length was sent: the connection is still in sync.
        c.send(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_response().body == b"Hello, world!\n"


def test_file_wrapper_without_content_length(server, big_file):
    path, data = big_file
    r = server.get(f"/file?path={path}&nocl=1")
    assert r.status == 200
    assert r.body == data


def test_file_wrapper_head(server, big_file):
    path, data = big_file
    with server.raw() as c:
        c.send(
            f"HEAD /file?path={path} HTTP/1.1\r\nHost: h\r\n\r\n"
            "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n".encode()
        )
        r1 = c.read_response("HEAD")
        r2 = c.read_response()
    assert r1.status == 200 and r1.get("Content-Length") == str(len(data))
    assert r2.body == b"Hello, world!\n"


def test_file_wrapper_over_bytesio_without_fileno(server):
    r = server.get("/file?kind=bytesio")
    assert r.status == 200
    assert r.body == FILE_BYTES


def test_file_wrapper_over_bytesio_seek(server):
    r = server.get("/file?kind=bytesio&seek=10")
    assert r.body == FILE_BYTES[10:]


def test_streaming_response_arrives_before_the_app_finishes(server, tmp_path):
    gate = tmp_path / "gate"
    with server.raw(timeout=6) as c:
        c.send(f"GET /stream?gate={gate} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        start = time.monotonic()
        _, status, _, headers = c.read_head()
        assert status == 200
        names = {k.lower(): v for k, v in headers}
        assert "chunked" in names.get("transfer-encoding", ""), headers
        # The app is blocked until the gate exists: this chunk must come through now.
        assert c.read_chunk() == b"first\n"
        assert time.monotonic() - start < 6
        assert not gate.exists()
        gate.write_text("open")
        assert c.read_chunk() == b"gate-open\n"
        assert c.read_chunk() == b""
        c.send(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_response().body == b"Hello, world!\n"


def _closed_count(path):
    try:
        return path.read_text().count("closed")
    except FileNotFoundError:
        return 0


def test_close_called_after_normal_iteration(server, tmp_path):
    marker = tmp_path / "closed.txt"
    r = server.get(f"/close-marker?path={marker}")
    assert r.status == 200
    assert r.body == b"chunk1,chunk2"
    wait_until(lambda: _closed_count(marker) >= 1, timeout=5, message="close()")
    time.sleep(0.2)
    assert _closed_count(marker) == 1  # exactly once


def test_close_called_when_iteration_raises(server, tmp_path):
    marker = tmp_path / "closed.txt"
    r = server.get(f"/close-marker?path={marker}&mode=raise")
    assert r.status == 500
    wait_until(lambda: _closed_count(marker) >= 1, timeout=5, message="close()")


def test_close_called_for_head(server, tmp_path):
    marker = tmp_path / "closed.txt"
    r = server.request("HEAD", f"/close-marker?path={marker}")
    assert r.status == 200 and r.body == b""
    wait_until(lambda: _closed_count(marker) >= 1, timeout=5, message="close()")


@pytest.mark.parametrize("kind", ["crlf", "lf", "cr", "name-crlf", "name-colon", "name-space"])
def test_header_injection_refused(server, kind):
    mark = server.mark()
    with server.raw() as c:
        c.send(f"GET /bad-header?kind={kind} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        r = c.read_response()
        assert r.status == 500
        assert all("injected" not in k.lower() for k, _ in r.headers), r.headers
        assert all("x-bad" not in k.lower() for k, _ in r.headers), r.headers
        assert b"must not be sent" not in r.body
        assert b"500" in r.body
        # The connection (and the worker) keep working.
        c.send(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_response().body == b"Hello, world!\n"
    # The log says which header was refused.
    server.wait_for_log(r"X-Bad", timeout=5, since=mark)


@pytest.mark.parametrize("kind", ["words", "short", "long", "crlf", "empty"])
def test_bad_status_refused(server, kind):
    with server.raw() as c:
        c.send(f"GET /bad-status?kind={kind} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        r = c.read_response()
        assert r.status == 500
        assert all("injected" not in k.lower() for k, _ in r.headers), r.headers
        assert b"must not be sent" not in r.body
        c.send(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_response().body == b"Hello, world!\n"


def test_error_pages_are_small_html(server):
    r = server.get("/raise")
    assert r.status == 500
    assert r.headers["Content-Type"].startswith("text/html")
    assert b"500" in r.body
    assert len(r.body) < 2048
    assert b"boom-marker" not in r.body  # no traceback leaks to the client
