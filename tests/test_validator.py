"""An app wrapped in wsgiref.validate.validator: tandem must not trip any of its checks."""

import concurrent.futures

import pytest
from conftest import serving

BAD_SIGNS = ("AssertionError", "Warning", "Exception ignored", "Traceback")


@pytest.fixture(scope="module")
def validated():
    with serving("validated_app:application", workers=2) as t:
        yield t


def test_validator_mix_of_requests(validated):
    t = validated
    conn = t.connection()
    try:
        # Keep-alive: many requests of different kinds on one connection.
        cases = [
            ("GET", "/", None, {}, 200, b"GET / q='' len=0\n"),
            ("GET", "/search?q=a+b&x=%20y", None, {}, 200, b"GET /search q='q=a+b&x=%20y' len=0\n"),
            (
                "POST",
                "/form",
                b"a=1&b=2",
                {"Content-Type": "application/x-www-form-urlencoded"},
                200,
                b"POST /form q='' len=7\n",
            ),
            (
                "PUT",
                "/big",
                b"z" * 50000,
                {"Content-Type": "application/octet-stream"},
                200,
                b"PUT /big q='' len=50000\n",
            ),
            ("HEAD", "/", None, {}, 200, b""),
            ("GET", "/write", None, {}, 200, b"written;returned"),
            ("GET", "/lines", None, {}, 200, b"a\nb\nc\n"),
            ("GET", "/missing", None, {}, 404, b"nothing here"),
            ("DELETE", "/thing?id=3", None, {}, 200, b"DELETE /thing q='id=3' len=0\n"),
            ("GET", "/caf%C3%A9", None, {"X-Multi": "a"}, 200, b"GET /caf\xc3\xa9 q='' len=0\n"),
            ("OPTIONS", "/", None, {}, 200, b"OPTIONS / q='' len=0\n"),
        ]
        for method, path, body, headers, status, expected in cases:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            assert (resp.status, data) == (status, expected), (method, path, t.log)
    finally:
        conn.close()

    # 204, chunked upload, HTTP/1.0, pipelining, over raw sockets.
    r1, r2 = t.exchange(
        b"GET /empty HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /chunked HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n",
        methods=("GET", "POST"),
    )
    assert r1.status == 204
    assert (r2.status, r2.body) == (200, b"POST /chunked q='' len=6\n")
    with t.raw() as c:
        c.send(b"GET /old?v=1.0 HTTP/1.0\r\n\r\n")
        head = c.read_head()
        rest = c.read_until_close()
    assert head[1] == 200
    assert rest.startswith(b"GET /old q='v=1.0' len=0\n")

    # Concurrent clients on both workers.
    def one(i):
        r = t.post(f"/c?i={i}", b"x" * i, headers={"Content-Type": "text/plain"})
        return r.status, r.body

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(40)))
    assert results == [(200, f"POST /c q='i={i}' len={i}\n".encode()) for i in range(40)]

    # Let the workers finish (and garbage-collect the validator's wrappers), then check
    # the log: any validator assertion or warning fails the test.
    t.stop()
    log = t.log
    for sign in BAD_SIGNS:
        assert sign not in log, log
    assert "error handling request" not in log, log
