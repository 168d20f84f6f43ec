"""103 Early Hints from the app (`environ['wsgi.early_hints']`): sent to the
client while the app is still working, before the final response, over
HTTP/1.1, cleartext HTTP/2 and HTTP/2 over TLS; never to HTTP/1.0 clients,
never after the final head, and never out of order on a reused or
pipelined connection."""

import socket
import threading
import time

import h2.config
import h2.connection
import h2.events
import pytest
import trustme
from certs import ServerFiles, client_context
from conftest import RawConn

LINK0 = "</static/app0.css>; rel=preload; as=style"
LINK1 = "</static/app1.css>; rel=preload; as=style"


def get(path, version="HTTP/1.1"):
    return f"GET {path} {version}\r\nHost: t\r\n\r\n".encode()


def hinted_get(address):
    """GET /hints?delay=1 on a fresh HTTP/1.1 connection: the first head
    read, the response after it, and the seconds from sending to the first
    head and from there to the response."""
    with RawConn(address) as c:
        c.send(get("/hints?delay=1"))
        sent = time.monotonic()
        head = c.read_head()
        hinted = time.monotonic()
        final = c.read_response()
        answered = time.monotonic()
    return head, final, hinted - sent, answered - hinted


def test_hints_arrive_before_the_app_has_answered(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1)
    (version, status, reason, headers), final, to_hint, hint_to_answer = hinted_get(t.address)
    assert (version, status, reason) == ("HTTP/1.1", 103, "Early Hints")
    assert headers == [("Link", LINK0)]
    assert final.status == 200 and final.body == b"hinted"
    assert final.get("Link") == LINK0
    # The 103 came while the app was still sleeping, not with the answer.
    assert to_hint < 0.8
    assert hint_to_answer > 0.5


def test_several_hints_then_the_response_on_a_reused_connection(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1)
    with RawConn(t.address) as c:
        for _ in range(3):
            c.send(get("/hints?n=2"))
            first = c.read_head()
            second = c.read_head()
            final = c.read_response()
            assert (first[1], first[3]) == (103, [("Link", LINK0)])
            assert (second[1], second[3]) == (103, [("Link", LINK1)])
            assert final.status == 200 and final.body == b"hinted"
        # A request without hints on the same connection gets none.
        c.send(get("/hello"))
        assert c.read_response().status == 200


def test_hints_may_be_given_as_bytes(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1)
    with RawConn(t.address) as c:
        c.send(get("/hints?bytes=1"))
        _, status, _, headers = c.read_head()
        assert (status, headers) == (103, [("Link", LINK0)])
        assert c.read_response().status == 200


def test_pipelined_requests_keep_each_hint_before_its_own_response(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=2)
    with RawConn(t.address) as c:
        c.send(get("/hints") + get("/hello") + get("/hints?n=2") + get("/hello"))
        statuses = []
        for _ in range(7):
            resp = c.read_response()
            statuses.append(resp.status)
        assert statuses == [103, 200, 200, 103, 103, 200, 200]


def test_http10_clients_get_no_hints(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1)
    with RawConn(t.address) as c:
        c.send(get("/hints", "HTTP/1.0"))
        data = c.read_until_close()
    assert data.startswith(b"HTTP/1.0 200 OK\r\n") or data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b" 103 " not in data
    assert data.endswith(b"hinted")


def test_hints_after_start_response_are_ignored(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1)
    with RawConn(t.address) as c:
        c.send(get("/hints?late=1"))
        final = c.read_response()
        assert (final.status, final.body) == (200, b"late")
        c.send(get("/hello"))
        assert c.read_response().status == 200


def test_invalid_hints_are_an_app_error(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1)
    with RawConn(t.address) as c:
        c.send(get("/hints?bad=1"))
        final = c.read_response()
    assert final.status == 500
    t.wait_for_log(r"error handling request GET /hints")
    t.wait_for_log(r"ValueError.*header name")


def test_an_app_failing_after_its_hints_leaves_the_connection_in_step(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1)
    with RawConn(t.address) as c:
        for _ in range(5):
            c.send(get("/hints?raise=1"))
            # A hint may come first; the 500 must be the last word on it.
            resp = c.read_response()
            if resp.status == 103:
                resp = c.read_response()
            assert resp.status == 500
            c.send(get("/hello"))
            resp = c.read_response()
            assert (resp.status, resp.body) == (200, b"Hello, world!\n")


class H2Client:
    """One HTTP/2 connection that records each event with the time it came."""

    def __init__(self, sock):
        self.sock = sock
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def get(self, path, authority="t", scheme="http"):
        """Sends GET `path` and reads until its stream ends: a list of
        (seconds since sending, event)."""
        sid = self.conn.get_next_available_stream_id()
        head = [(":method", "GET"), (":path", path), (":scheme", scheme), (":authority", authority)]
        self.conn.send_headers(sid, head, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        sent = time.monotonic()
        seen = []
        while True:
            data = self.sock.recv(65536)
            assert data, "connection closed before the stream ended"
            for event in self.conn.receive_data(data):
                if getattr(event, "stream_id", None) != sid:
                    continue
                seen.append((time.monotonic() - sent, event))
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                if isinstance(event, h2.events.StreamEnded):
                    self.sock.sendall(self.conn.data_to_send())
                    return seen
            self.sock.sendall(self.conn.data_to_send())


def check_h2_hints(seen):
    kinds = [type(event).__name__ for _, event in seen]
    assert kinds[:2] == ["InformationalResponseReceived", "InformationalResponseReceived"]
    assert "ResponseReceived" in kinds
    hints = [dict(event.headers) for _, event in seen[:2]]
    assert [h[b":status"] for h in hints] == [b"103", b"103"]
    assert [h[b"link"] for h in hints] == [LINK0.encode(), LINK1.encode()]
    final = next(event for _, event in seen if isinstance(event, h2.events.ResponseReceived))
    assert dict(final.headers)[b":status"] == b"200"
    body = b"".join(event.data for _, event in seen if isinstance(event, h2.events.DataReceived))
    assert body == b"hinted"
    hinted_at = seen[1][0]
    answered_at = next(at for at, event in seen if isinstance(event, h2.events.ResponseReceived))
    assert hinted_at < 0.8 and answered_at - hinted_at > 0.5


def test_h2c_hints_arrive_as_informational_headers(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1)
    with socket.create_connection(t.address, timeout=10) as sock:
        client = H2Client(sock)
        check_h2_hints(client.get("/hints?n=2&delay=1"))
        # The connection carries on with a plain request.
        seen = client.get("/hello")
        assert [type(e).__name__ for _, e in seen][0] == "ResponseReceived"


def test_h2_over_tls_hints(tandem_factory, tmp_path):
    ca = trustme.CA()
    files = ServerFiles(ca, tmp_path)
    t = tandem_factory("wsgi_app:app", *files.args, workers=1)
    ctx = client_context(ca, alpn=["h2"])
    with socket.create_connection(t.address, timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
            assert sock.selected_alpn_protocol() == "h2"
            client = H2Client(sock)
            seen = client.get("/hints?n=2&delay=1", authority=f"localhost:{t.port}", scheme="https")
            check_h2_hints(seen)


@pytest.mark.parametrize("n", [1, 3])
def test_hints_over_http11_with_tls(tandem_factory, tmp_path, n):
    ca = trustme.CA()
    files = ServerFiles(ca, tmp_path)
    t = tandem_factory("wsgi_app:app", *files.args, workers=1)
    ctx = client_context(ca, alpn=["http/1.1"])
    with socket.create_connection(t.address, timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(get(f"/hints?n={n}"))
            data = b""
            while not data.endswith(b"hinted"):
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
    assert data.count(b"HTTP/1.1 103 Early Hints\r\n") == n
    assert data.index(b"HTTP/1.1 200 OK") > data.rindex(b"HTTP/1.1 103")


def test_a_front_passes_an_app_nodes_hints_on(tandem_factory, tmp_path):
    app_node = tandem_factory("wsgi_app:app", workers=1)
    config = tmp_path / "front.toml"
    config.write_text(
        '[[route]]\nprefix = "/"\nproxy = "apps"\n'
        f'[upstream.apps]\nservers = ["127.0.0.1:{app_node.port}"]\n'
    )
    t = tandem_factory(None, "--config", str(config), workers=None)
    (_, status, _, headers), final, to_hint, hint_to_answer = hinted_get(t.address)
    assert (status, headers) == (103, [("link", LINK0)])
    assert final.status == 200 and final.body == b"hinted"
    assert to_hint < 0.8 and hint_to_answer > 0.5
    with socket.create_connection(t.address, timeout=10) as sock:
        check_h2_hints(H2Client(sock).get("/hints?n=2&delay=1"))


def late_hinting_upstream():
    """An upstream that reads one request, then sends a 103 only after 1.5 s
    (past the front's response timeout) and its 200 a second later."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = server.accept()
        with conn:
            f = conn.makefile("rb")
            while f.readline() not in (b"\r\n", b""):
                pass
            time.sleep(1.5)
            try:
                conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </late.css>; rel=preload\r\n\r\n")
                time.sleep(1)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
            except OSError:
                pass  # the front gave up on this request and closed

    threading.Thread(target=serve, daemon=True).start()
    return server


def test_hints_after_the_response_went_out_are_dropped(tandem_factory, tmp_path):
    upstream = late_hinting_upstream()
    port = upstream.getsockname()[1]
    app_node = tandem_factory("wsgi_app:app", workers=1)
    config = tmp_path / "front.toml"
    config.write_text(
        '[[route]]\nprefix = "/late"\nproxy = "late"\n'
        '[[route]]\nprefix = "/"\nproxy = "apps"\n'
        f'[upstream.late]\nservers = ["127.0.0.1:{port}"]\nresponse-timeout = 1\n'
        f'[upstream.apps]\nservers = ["127.0.0.1:{app_node.port}"]\n'
    )
    t = tandem_factory(None, "--config", str(config), workers=None)
    try:
        with RawConn(t.address) as c:
            c.send(get("/late"))
            assert c.read_response().status == 504
            # The upstream's 103 comes now, for a request already answered.
            time.sleep(1.2)
            c.send(get("/hello"))
            resp = c.read_response()
            assert (resp.status, resp.body) == (200, b"Hello, world!\n")
    finally:
        upstream.close()
