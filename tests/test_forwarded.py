"""--forwarded-allow-ips: X-Forwarded-For/-Proto/-Host and Forwarded (RFC
7239) set REMOTE_ADDR, wsgi.url_scheme and the host only when the peer is a
trusted proxy."""

from conftest import RawConn, run_tandem

FORWARDED = (
    b"GET /echo HTTP/1.1\r\nHost: h\r\n"
    b"X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n"
)


def seen(address):
    with RawConn(address, timeout=10) as c:
        c.send(FORWARDED)
        r = c.read_response()
    assert r.status == 200
    body = r.json()
    return body["remote_addr"], body["url_scheme"], body["server_port"]


def test_loopback_proxy_is_trusted_by_default(server):
    # The client is the first address from the right that isn't a trusted proxy.
    assert seen(server.address) == ("203.0.113.7", "https", "443")


def test_untrusted_peer_cannot_claim_another_address(tandem_factory):
    t = tandem_factory("wsgi_app:app", "--forwarded-allow-ips", "10.0.0.0/8", workers=1)
    assert seen(t.address) == ("127.0.0.1", "http", "80")


def test_trusted_list_from_the_environment(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1, env={"FORWARDED_ALLOW_IPS": "192.0.2.1"})
    assert seen(t.address)[:2] == ("127.0.0.1", "http")
    t2 = tandem_factory("wsgi_app:app", workers=1, env={"FORWARDED_ALLOW_IPS": "*"})
    assert seen(t2.address)[:2] == ("203.0.113.7", "https")


def test_unix_socket_peers_are_trusted(tandem_factory, tmp_path):
    path = str(tmp_path / "t.sock")
    tandem_factory("wsgi_app:app", "--forwarded-allow-ips", "", binds=(f"unix:{path}",), workers=1)
    # The unix peer is trusted although no address is: its headers count, and
    # with no trusted hops the client is the rightmost address.
    assert seen(path)[:2] == ("127.0.0.1", "https")


def test_bad_list_is_a_usage_error():
    r = run_tandem(["--forwarded-allow-ips", "10.0.0.0/40", "wsgi_app:app"])
    assert r.returncode == 2
    assert "--forwarded-allow-ips" in r.stderr and "10.0.0.0/40" in r.stderr


def echo_with(address, extra):
    with RawConn(address, timeout=10) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: internal:8000\r\n" + extra + b"\r\n")
        r = c.read_response()
    assert r.status == 200
    return r.json()


def test_forwarded_host_from_a_trusted_proxy(server):
    seen = echo_with(server.address, b"X-Forwarded-Host: example.com:8443\r\n")
    assert seen["headers"]["HTTP_HOST"] == "example.com:8443"
    assert (seen["server_name"], seen["server_port"]) == ("example.com", "8443")


def test_rfc7239_forwarded_from_a_trusted_proxy(server):
    header = b'Forwarded: for="[2001:db8::7]:4711";proto=https;host=shop.example\r\n'
    seen = echo_with(server.address, header)
    assert (seen["remote_addr"], seen["url_scheme"]) == ("2001:db8::7", "https")
    assert seen["headers"]["HTTP_HOST"] == "shop.example"
    assert (seen["server_name"], seen["server_port"]) == ("shop.example", "443")


def test_forwarded_host_and_forwarded_ignored_from_untrusted_peers(tandem_factory):
    t = tandem_factory("wsgi_app:app", "--forwarded-allow-ips", "10.0.0.0/8", workers=1)
    extra = (
        b"X-Forwarded-Host: evil.example\r\n"
        b"Forwarded: for=203.0.113.7;proto=https;host=evil.example\r\n"
    )
    seen = echo_with(t.address, extra)
    assert seen["headers"]["HTTP_HOST"] == "internal:8000"
    assert (seen["remote_addr"], seen["url_scheme"]) == ("127.0.0.1", "http")
    assert seen["server_name"] == "internal"
