"""HTTP/2: over TLS (ALPN h2) and in cleartext with prior knowledge (h2c),
many concurrent streams on one connection against the app and a static
route, the request-head limits, connection-specific headers, and closing
idle connections."""

import asyncio
import socket
import time

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trustme
from certs import ServerFiles, client_context


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def static_dir(tmp_path):
    root = tmp_path / "static"
    root.mkdir()
    (root / "app.css").write_bytes(b"body { color: red }\n" * 500)
    return root


def h2c_client(**kw):
    return httpx.Client(http1=False, http2=True, timeout=15, **kw)


def test_h2_over_tls_reaches_the_app(tandem_factory, ca, tmp_path):
    files = ServerFiles(ca, tmp_path)
    t = tandem_factory("wsgi_app:app", *files.args, workers=1)
    with httpx.Client(http2=True, verify=client_context(ca), timeout=15) as client:
        r = client.get(f"https://localhost:{t.port}/echo?x=1", headers={"X-Test": "yes"})
    assert r.http_version == "HTTP/2"
    seen = r.json()
    assert seen["protocol"] == "HTTP/2"
    assert seen["url_scheme"] == "https"
    assert seen["query"] == "x=1"
    assert seen["headers"]["HTTP_X_TEST"] == "yes"
    # :authority becomes the Host the app sees.
    assert seen["headers"]["HTTP_HOST"] == f"localhost:{t.port}"
    assert (seen["server_name"], seen["server_port"]) == ("localhost", str(t.port))


def test_h2c_prior_knowledge_and_http11_share_a_plain_listener(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1)
    with h2c_client() as client:
        r = client.post(f"{t.url}/echo", content=b"payload")
    assert r.http_version == "HTTP/2"
    assert (r.json()["body"], r.json()["url_scheme"], r.json()["protocol"]) == (
        "payload",
        "http",
        "HTTP/2",
    )
    with httpx.Client(timeout=15) as client:
        r = client.get(f"{t.url}/echo")
    assert r.http_version == "HTTP/1.1" and r.json()["protocol"] == "HTTP/1.1"


def test_no_http2_refuses_the_h2c_preface(tandem_factory):
    t = tandem_factory("wsgi_app:app", "--no-http2", workers=1)
    with pytest.raises(httpx.HTTPError):
        with h2c_client() as client:
            client.get(f"{t.url}/hello")


@pytest.mark.parametrize("tls", [True, False], ids=["h2", "h2c"])
def test_many_concurrent_streams_on_one_connection(tandem_factory, ca, tmp_path, static_dir, tls):
    args = ["--static", f"/static/={static_dir}", "--h2-max-concurrent-streams", "50"]
    if tls:
        files = ServerFiles(ca, tmp_path)
        args += files.args
    t = tandem_factory("wsgi_app:app", *args, workers=2)
    base = f"https://localhost:{t.port}" if tls else t.url
    css = (static_dir / "app.css").read_bytes()

    async def run():
        opts = {"verify": client_context(ca)} if tls else {"http1": False}
        async with httpx.AsyncClient(http2=True, timeout=30, **opts) as client:
            app = [client.get(f"{base}/echo?i={i}") for i in range(150)]
            static = [client.get(f"{base}/static/app.css") for _ in range(150)]
            return await asyncio.gather(*app, *static)

    responses = asyncio.run(run())
    assert all(r.http_version == "HTTP/2" and r.status_code == 200 for r in responses)
    app, static = responses[:150], responses[150:]
    assert [r.json()["query"] for r in app] == [f"i={i}" for i in range(150)]
    # One connection carried them all.
    assert len({r.json()["remote_port"] for r in app}) == 1
    assert all(r.content == css for r in static)


def test_request_head_limits_apply(tandem_factory):
    t = tandem_factory(
        "wsgi_app:app",
        "--limit-request-line",
        "200",
        "--limit-request-field-size",
        "300",
        workers=1,
    )
    with h2c_client() as client:
        assert client.get(f"{t.url}/echo?" + "a" * 300).status_code == 414
        assert client.get(f"{t.url}/echo", headers={"X-Big": "b" * 400}).status_code == 431
        many = {f"X-H{i}": "v" for i in range(120)}
        assert client.get(f"{t.url}/echo", headers=many).status_code == 431
        assert client.get(f"{t.url}/echo", headers={"X-Small": "s" * 100}).status_code == 200


def test_error_responses_carry_no_connection_header(tandem_factory):
    # A 413 says "Connection: close" over HTTP/1.1; HTTP/2 forbids the header
    # (the h2 library would fail the stream on it).
    t = tandem_factory("wsgi_app:app", "--max-request-body", "10", workers=1)
    with h2c_client() as client:
        r = client.post(f"{t.url}/echo", content=b"x" * 100)
        assert r.status_code == 413
        assert "connection" not in r.headers
        # The connection carries on.
        assert client.get(f"{t.url}/hello").text == "Hello, world!\n"


GOAWAY = 0x7


class RawH2:
    """An HTTP/2 client connection over a plain socket, frame by frame."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()

    def flush(self):
        self.sock.sendall(self.conn.data_to_send())

    def get(self, path):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, self.head("GET", path), end_stream=True)
        self.flush()
        return self.response(sid)

    @staticmethod
    def head(method, path):
        return [(":method", method), (":path", path), (":scheme", "http"), (":authority", "t")]

    def response(self, sid):
        """Reads until stream `sid` ends: (status, body)."""
        status, body = None, b""
        while True:
            for event in self.events():
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.StreamEnded):
                    self.flush()
                    return status, body

    def events(self):
        data = self.sock.recv(65536)
        if not data:
            return [None]
        events = self.conn.receive_data(data)
        self.flush()
        return events


def frame_types(data):
    """The types of the HTTP/2 frames in `data` (which starts at a frame)."""
    types = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        types.append(data[3])
        data = data[9 + length :]
    return types


def test_idle_connection_gets_goaway_after_keepalive_timeout(tandem_factory):
    t = tandem_factory("wsgi_app:app", "--keepalive-timeout", "1", workers=1)
    c = RawH2(t.address)
    assert c.get("/hello") == (b"200", b"Hello, world!\n")
    start = time.monotonic()
    rest = b""
    # The client neither answers the GOAWAY's PING nor closes: tandem
    # closes the connection itself shortly after.
    while chunk := c.sock.recv(65536):
        rest += chunk
    elapsed = time.monotonic() - start
    assert GOAWAY in frame_types(rest)
    assert 0.5 < elapsed < 6


def test_stalled_request_body_gets_408(tandem_factory):
    t = tandem_factory("wsgi_app:app", "--body-timeout", "1", workers=1)
    c = RawH2(t.address)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, c.head("POST", "/echo"))
    c.conn.send_data(sid, b"the start of a body, then nothing")
    c.flush()
    start = time.monotonic()
    status, _ = c.response(sid)
    assert status == b"408"
    assert 0.8 < time.monotonic() - start < 5
    # Other streams on the connection carry on.
    assert c.get("/hello") == (b"200", b"Hello, world!\n")


def test_silent_h2c_connection_closes_at_the_header_timeout(tandem_factory):
    t = tandem_factory("wsgi_app:app", "--header-timeout", "1", workers=1)
    with socket.create_connection(t.address, timeout=10) as s:
        start = time.monotonic()
        s.sendall(b"PRI * HTTP/2.0\r\n")  # part of the preface, then nothing
        assert s.recv(100) == b""
        assert 0.8 < time.monotonic() - start < 5


def test_connect_is_refused_with_405(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1)
    c = RawH2(t.address)
    sid = c.conn.get_next_available_stream_id()
    head = [(":method", "CONNECT"), (":authority", "example.com:443")]
    c.conn.send_headers(sid, head, end_stream=True)
    c.flush()
    status, _ = c.response(sid)
    assert status == b"405"
    # The connection carries on.
    assert c.get("/hello") == (b"200", b"Hello, world!\n")
