"""HTTP/1.1 basics through the front: keep-alive, pipelining, HEAD, lengths, chunking."""

import concurrent.futures
import json
import time


def get(path, extra=b"", version=b"HTTP/1.1", method=b"GET"):
    return method + b" " + path + b" " + version + b"\r\nHost: test.local\r\n" + extra + b"\r\n"


def test_hello(server):
    r = server.get("/hello")
    assert r.status == 200
    assert r.body == b"Hello, world!\n"
    assert r.headers["Content-Length"] == "14"
    assert r.headers["Content-Type"] == "text/plain"


def test_unknown_route_is_the_apps_404(server):
    r = server.get("/nope")
    assert r.status == 404
    assert b"no route '/nope'" in r.body


def test_keep_alive_reuses_one_connection(server):
    conn = server.connection()
    try:
        ports = set()
        for i in range(5):
            conn.request("GET", f"/echo?i={i}")
            resp = conn.getresponse()
            data = json.loads(resp.read())
            assert resp.status == 200
            assert data["query"] == f"i={i}"
            ports.add(data["remote_port"])
            assert not resp.will_close
        # Every request came over the same TCP connection (same client port).
        assert len(ports) == 1
    finally:
        conn.close()


def test_pipelined_requests_answered_in_order(server):
    # The first request is slow: the second must still come back second.
    data = get(b"/sleep?s=0.3") + get(b"/echo?n=2") + get(b"/echo?n=3")
    with server.raw() as c:
        c.send(data)  # one write, three requests
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
    assert r1.status == 200 and r1.body.startswith(b"slept ")
    assert r2.status == 200 and r2.json()["query"] == "n=2"
    assert r3.status == 200 and r3.json()["query"] == "n=3"


def test_pipelined_post_bodies_stay_separate(server):
    data = (
        b"POST /echo?n=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nfirst"
        b"POST /echo?n=2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n"
        b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    r1, r2, r3 = server.exchange(data, methods=("POST", "POST", "GET"))
    assert r1.json()["body"] == "first"
    assert r2.json()["body"] == "second"
    assert r3.body == b"Hello, world!\n"


def test_chunked_request_body(server):
    data = (
        b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: text/plain\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    (r,) = server.exchange(data, methods=("POST",))
    assert r.status == 200
    body = r.json()
    assert body["body"] == "hello world!"
    assert body["input_terminated"] is True
    assert body["content_type"] == "text/plain"


def test_head_has_headers_but_no_body(server):
    # A GET pipelined after the HEAD proves no body bytes followed the HEAD response.
    data = get(b"/head", method=b"HEAD") + get(b"/hello")
    r1, r2 = server.exchange(data, methods=("HEAD", "GET"))
    assert r1.status == 200
    assert r1.get("Content-Length") == "14"
    assert r1.body == b""
    assert r2.status == 200 and r2.body == b"Hello, world!\n"


def test_head_on_unknown_length_sends_no_body(server):
    data = get(b"/no-cl", method=b"HEAD") + get(b"/hello")
    r1, r2 = server.exchange(data, methods=("HEAD", "GET"))
    assert r1.status == 200
    assert r2.status == 200 and r2.body == b"Hello, world!\n"


def test_head_via_http_client(server):
    r = server.request("HEAD", "/hello")
    assert r.status == 200 and r.body == b""
    assert r.headers["Content-Length"] == "14"


def test_204_and_304_have_no_body(server):
    data = get(b"/204") + get(b"/304") + get(b"/hello")
    r1, r2, r3 = server.exchange(data, methods=("GET", "GET", "GET"))
    assert r1.status == 204
    assert r2.status == 304
    for r in (r1, r2):
        assert r.get("Transfer-Encoding") is None
        assert r.get("Content-Length") in (None, "0")
    assert r2.get("ETag") == '"x"'
    # Had the app's body leaked, the third response would not parse.
    assert r3.status == 200 and r3.body == b"Hello, world!\n"


def test_content_length_is_honoured_over_a_longer_body(server):
    with server.raw() as c:
        c.send(get(b"/cl-more"))
        r1 = c.read_response()
        assert r1.get("Content-Length") == "5"
        assert r1.body == b"01234"
        # Same connection: no stray bytes of the longer body may follow.
        c.send(get(b"/hello"))
        r2 = c.read_response()
    assert r2.status == 200 and r2.body == b"Hello, world!\n"


def test_unknown_length_is_chunked_on_http11(server):
    # The app gives no Content-Length and the body is still being produced
    # when the front starts sending: chunked transfer.
    with server.raw() as c:
        c.send(get(b"/no-cl-slow"))
        r = c.read_response()
        assert r.status == 200
        assert r.chunked, r.headers
        assert r.get("Content-Length") is None
        assert r.body == b"a" * (100 * 1024) + b"def"
        c.send(get(b"/hello"))  # still usable afterwards
        assert c.read_response().body == b"Hello, world!\n"


def test_length_of_a_fully_buffered_body_is_announced(server):
    # No Content-Length from the app, but the whole body reached the front
    # before sending began: its length is known, so it is sent with one.
    with server.raw() as c:
        c.send(get(b"/no-cl"))
        r = c.read_response()
        assert r.status == 200
        assert not r.chunked, r.headers
        assert r.get("Content-Length") == "6"
        assert r.body == b"abcdef"


def test_unknown_length_is_not_chunked_on_http10(server):
    with server.raw() as c:
        c.send(get(b"/no-cl", version=b"HTTP/1.0"))
        version, status, _, headers = c.read_head()
        rest = c.read_until_close()  # HTTP/1.0 without keep-alive: closes after
    names = {k.lower(): v for k, v in headers}
    assert status == 200
    assert "chunked" not in names.get("transfer-encoding", "").lower()
    assert rest == b"abcdef"


def test_http10_request_is_answered(server):
    with server.raw() as c:
        c.send(get(b"/echo", version=b"HTTP/1.0"))
        _, status, _, headers = c.read_head()
        rest = c.read_until_close()
    assert status == 200
    length = dict((k.lower(), v) for k, v in headers).get("content-length")
    if length is not None:
        rest = rest[: int(length)]
    assert json.loads(rest)["protocol"] == "HTTP/1.0"


def test_connection_close_is_honoured(server):
    with server.raw() as c:
        c.send(get(b"/hello", extra=b"Connection: close\r\n"))
        r = c.read_response()
        assert r.body == b"Hello, world!\n"
        c.settimeout(5)
        assert c.read_until_close() == b""  # the server closed its side


def test_many_concurrent_clients(server):
    def one(i):
        r = server.get(f"/echo?i={i}")
        return r.status, r.json()["query"]

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        results = list(ex.map(one, range(64)))
    assert results == [(200, f"i={i}") for i in range(64)]
    assert time.monotonic() - start < 20
