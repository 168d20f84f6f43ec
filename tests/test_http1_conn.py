"""The front's HTTP/1.1 connection loop: status line, connection fields,
request bodies the handler leaves unread, `100 Continue`, and the stop.

Raw sockets throughout, since each test is about the exact bytes and about
whether the connection stays open."""

import signal
import socket
import time

import pytest
from conftest import RawConn, serving


def expecting(method, path, length):
    """A head that waits for `100 Continue` before a body of `length` bytes."""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {length}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()


def get(path, extra=b"", version=b"HTTP/1.1", method=b"GET"):
    return method + b" " + path + b" " + version + b"\r\nHost: test.local\r\n" + extra + b"\r\n"


def closes_soon(c, timeout=5.0):
    """Whether the server ends the connection (EOF or reset) within `timeout`."""
    c.settimeout(timeout)
    try:
        return c.read_until_close() == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The test app with a static mount (whose handler never reads a body)."""
    root = tmp_path_factory.mktemp("http1-static")
    (root / "a.txt").write_bytes(b"static a\n")
    args = ("--static", f"/static/={root}", "--max-request-body", "100000")
    with serving("wsgi_app:app", *args) as t:
        yield t


def test_an_http10_request_gets_an_http11_status_line_and_a_closing_answer(site):
    with site.raw() as c:
        c.send(get(b"/hello", version=b"HTTP/1.0"))
        version, status, _, headers = c.read_head()
        fields = {k.lower(): v for k, v in headers}
        # RFC 9110 6.2: the highest minor version the server speaks, as nginx.
        assert (version, status) == ("HTTP/1.1", 200)
        assert fields["connection"] == "close"
        assert "date" in fields
        assert c.read_until_close() == b"Hello, world!\n"


def test_an_http10_keep_alive_connection_is_kept_and_says_so(site):
    with site.raw() as c:
        for _ in range(2):
            c.send(get(b"/hello", extra=b"Connection: keep-alive\r\n", version=b"HTTP/1.0"))
            r = c.read_response()
            assert r.status == 200 and r.body == b"Hello, world!\n"
            assert r.get("Connection") == "keep-alive"


def test_an_http11_request_that_closes_gets_connection_close(site):
    with site.raw() as c:
        c.send(get(b"/static/a.txt", extra=b"Connection: close\r\n"))
        r = c.read_response()
        assert r.body == b"static a\n"
        assert r.get("Connection") == "close"
        assert closes_soon(c)


def test_a_small_unread_body_is_dropped_and_the_connection_kept(site):
    with site.raw() as c:
        # The static route answers without reading the body; its 10 bytes must
        # not be read as the start of the next request.
        c.send(get(b"/static/a.txt", extra=b"Content-Length: 10\r\n") + b"0123456789")
        r = c.read_response()
        assert r.status == 200 and r.body == b"static a\n"
        assert r.get("Connection") is None
        c.send(get(b"/echo"))
        r = c.read_response()
        assert r.status == 200 and r.json()["method"] == "GET"


def test_a_chunked_unread_body_is_dropped_too(site):
    with site.raw() as c:
        c.send(
            get(b"/static/a.txt", extra=b"Transfer-Encoding: chunked\r\n")
            + b"5\r\nhello\r\n0\r\n\r\n"
            + get(b"/echo")
        )
        assert c.read_response().body == b"static a\n"
        assert c.read_response().json()["method"] == "GET"


def test_an_unread_body_too_large_to_drop_closes_the_connection(site):
    size = 3 * 1024 * 1024
    with site.raw() as c:
        c.send(get(b"/static/a.txt", extra=f"Content-Length: {size}\r\n".encode()))
        r = c.read_response()
        assert r.status == 200 and r.body == b"static a\n"
        c.settimeout(10)
        try:
            c.send(b"x" * size)
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed before all of it went out: what is asserted below
        assert closes_soon(c)


def test_continue_is_sent_when_the_body_is_read(site):
    with site.raw() as c:
        c.send(expecting("POST", "/echo", 5))
        version, status, _, _ = c.read_head()
        assert status == 100
        c.send(b"hello")
        r = c.read_response()
        assert r.status == 200 and r.json()["body"] == "hello"


def test_no_continue_for_a_body_refused_on_its_declared_length(site):
    with site.raw() as c:
        c.send(expecting("POST", "/echo", 200000))
        r = c.read_response()
        assert r.status == 413
        assert r.get("Connection") == "close"
        assert closes_soon(c)


def test_no_continue_and_no_keep_alive_when_the_handler_never_reads_the_body(site):
    with site.raw() as c:
        c.send(expecting("PUT", "/static/a.txt", 5))
        r = c.read_response()
        # The static route refuses PUT without reading; the client still holds
        # its body back, so the connection cannot carry another request.
        assert r.status == 405
        assert r.get("Connection") == "close"
        assert closes_soon(c)


def test_a_status_without_a_reason_phrase_keeps_its_code(site):
    with site.raw() as c:
        c.send(get(b"/status?code=299"))
        version, status, reason, _ = c.read_head()
    assert (version, status, reason) == ("HTTP/1.1", 299, "")


def test_a_stop_lets_the_request_under_way_finish_and_closes(tandem_factory):
    t = tandem_factory("wsgi_app:app", "--graceful-timeout", "10", workers=1)
    c = RawConn(t.address)
    try:
        c.send(get(b"/sleep?s=1"))
        time.sleep(0.3)
        t.signal(signal.SIGTERM)
        r = c.read_response()
        assert r.status == 200 and r.body.startswith(b"slept ")
        assert r.get("Connection") == "close"
        assert closes_soon(c)
    finally:
        c.close()


def test_a_close_with_a_body_unread_lingers_rather_than_resets(site):
    # The client sends its body without waiting (no Expect); the front answers
    # 413 on the declared length and closes, but keeps reading and dropping
    # what comes for a moment first (nginx's lingering close): a client still
    # sending gets no reset that could destroy the answer before it reads it.
    with site.raw(timeout=10) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5000000\r\n\r\n")
        c.send(b"x" * 65536)
        r = c.read_response("POST")
        assert r.status == 413
        assert r.get("Connection") == "close"
        for _ in range(10):
            time.sleep(0.05)
            c.send(b"x" * 16384)  # a reset would fail these sends
        assert closes_soon(c)


@pytest.mark.parametrize("code", [100, 101, 103])
def test_a_final_informational_status_from_the_app_is_a_500(site, code):
    # A client would read it as interim and take the next response for this one's.
    with site.raw() as c:
        c.send(get(f"/status?code={code}".encode()) + get(b"/echo"))
        r = c.read_response()
        assert r.status == 500
        assert c.read_response().json()["method"] == "GET"
    assert site.wait_for_log(f"status {code} is not a final response")


def test_connect_is_refused_and_the_connection_closed(site):
    with site.raw() as c:
        c.send(b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n" + get(b"/static/a.txt"))
        r = c.read_response()
        assert r.status == 405
        assert r.get("Connection") == "close"
        assert closes_soon(c)


@pytest.mark.parametrize("values", ["+5", "5,6", "-1", " 5"])
def test_an_app_content_length_that_is_not_one_number_is_a_500(site, values):
    with site.raw() as c:
        c.send(get(f"/length?v={values.replace(' ', '%20')}".encode()))
        assert c.read_response().status == 500


def test_repeated_equal_content_lengths_go_out_as_one(site):
    with site.raw() as c:
        c.send(get(b"/length?v=5,5"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello"
        assert r.get_all("Content-Length") == ["5"]


def test_a_204_carries_no_content_length(site):
    with site.raw() as c:
        c.send(get(b"/length?v=5&status=204%20No%20Content") + get(b"/echo"))
        r = c.read_response()
        assert r.status == 204
        assert r.get("Content-Length") is None
        assert c.read_response().json()["method"] == "GET"


def test_chunk_extensions_up_to_the_line_limit_are_read(site):
    line = b"1;" + b"e" * 4094  # 4096 bytes before the CRLF: the limit
    with site.raw() as c:
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + line
            + b"\r\na\r\n0\r\n\r\n"
        )
        r = c.read_response("POST")
        assert r.status == 200 and r.json()["body"] == "a"


def test_a_pipelined_head_gets_its_own_header_timeout(tandem_factory):
    # The next head begins in the same read as the end of a body that took
    # longer than the header timeout: its timeout counts from then.
    t = tandem_factory("wsgi_app:app", "--header-timeout", "1", workers=1)
    with t.raw() as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n12345")
        time.sleep(1.3)
        c.send(b"67890GET /echo HTTP/1.1\r\nHo")
        time.sleep(0.2)
        c.send(b"st: h\r\n\r\n")
        assert c.read_response("POST").json()["body"] == "1234567890"
        assert c.read_response().json()["method"] == "GET"


def test_an_absolute_form_target_names_the_host_the_app_sees(site):
    with site.raw() as c:
        c.send(b"GET http://app.example:8080/echo?x=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
        seen = c.read_response().json()
    assert seen["headers"]["HTTP_HOST"] == "app.example:8080"
    assert (seen["server_name"], seen["server_port"]) == ("app.example", "8080")
    assert (seen["path"], seen["query"]) == ("/echo", "x=1")
