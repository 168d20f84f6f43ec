"""Request-head limits at their defaults (8190-byte request line, 100 fields,
8190-byte fields) and when raised past hyper's own caps."""

from conftest import RawConn


def request_line_of(length):
    prefix, suffix = b"GET /echo/", b" HTTP/1.1"
    return prefix + b"a" * (length - len(prefix) - len(suffix)) + suffix


def ask(server, head_lines, method="GET"):
    data = b"\r\n".join(head_lines) + b"\r\n\r\n"
    with RawConn(server.address, timeout=10) as c:
        c.send(data)
        return c.read_response(method)


def test_request_line_limit_default(server):
    assert len(request_line_of(8190)) == 8190
    assert ask(server, [request_line_of(8190), b"Host: h"]).status == 200
    r = ask(server, [request_line_of(8191), b"Host: h"])
    assert r.status == 414
    assert r.get("Connection") == "close"


def test_field_count_limit_default(server):
    fields = [b"X-F%d: v" % i for i in range(99)]
    r = ask(server, [b"GET /echo HTTP/1.1", b"Host: h", *fields])
    assert r.status == 200 and r.json()["headers"]["HTTP_X_F98"] == "v"
    assert ask(server, [b"GET /echo HTTP/1.1", b"Host: h", *fields, b"X-One-More: v"]).status == 431


def test_field_size_limit_default(server):
    def field(size):
        return b"X-Big: " + b"v" * (size - len(b"X-Big: "))

    assert ask(server, [b"GET /echo HTTP/1.1", b"Host: h", field(8190)]).status == 200
    assert ask(server, [b"GET /echo HTTP/1.1", b"Host: h", field(8191)]).status == 431


def test_limits_can_be_raised_past_hypers_own(tandem_factory):
    t = tandem_factory(
        "wsgi_app:app",
        "--limit-request-fields", "300",
        "--limit-request-line", "20000",
        workers=1,
    )  # fmt: skip
    fields = [b"X-F%d: v" % i for i in range(250)]
    r = ask(t, [b"GET /echo HTTP/1.1", b"Host: h", *fields])
    assert r.status == 200 and r.json()["headers"]["HTTP_X_F249"] == "v"
    assert ask(t, [request_line_of(20000), b"Host: h"]).status == 200
    assert ask(t, [request_line_of(20001), b"Host: h"]).status == 414


def test_refused_request_is_logged_with_its_status(tandem_factory):
    t = tandem_factory("wsgi_app:app", "--limit-request-line", "100", workers=1)
    mark = t.mark()
    assert ask(t, [request_line_of(200), b"Host: h"]).status == 414
    t.wait_for_log(r"refused request: 414, request line longer than 100 bytes", since=mark)
