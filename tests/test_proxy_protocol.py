"""--proxy-protocol: a v1 or v2 header opens each connection and names the
client; a connection without a valid one is closed before any HTTP."""

import ipaddress
import socket
import struct
import time

import pytest
import trustme
from certs import ServerFiles, client_context
from conftest import RawConn, serving

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
REQUEST = b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n"


def v2(command, family, body):
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def v2_tcp4(src, sport, dst="10.0.0.1", dport=443):
    body = (
        ipaddress.ip_address(src).packed
        + ipaddress.ip_address(dst).packed
        + struct.pack("!HH", sport, dport)
    )
    return v2(1, 0x11, body)


def v2_tcp6(src, sport, dst="::1", dport=443):
    body = (
        ipaddress.ip_address(src).packed
        + ipaddress.ip_address(dst).packed
        + struct.pack("!HH", sport, dport)
    )
    return v2(1, 0x21, body + b"\x04\x00\x01\xaa")  # and a TLV, which is skipped


@pytest.fixture(scope="module")
def proxied():
    with serving("wsgi_app:app", "--proxy-protocol", workers=1) as t:
        yield t


def echo_through(t, header, request=REQUEST):
    with RawConn(t.address, timeout=10) as c:
        c.send(header + request)
        r = c.read_response()
    assert r.status == 200, r
    return r.json()


def closed_without_answer(t, data):
    with socket.create_connection(t.address, timeout=10) as s:
        s.sendall(data)
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except ConnectionResetError:
            pass
    return got == b""


def test_v1_names_the_client(proxied):
    seen = echo_through(proxied, b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n")
    assert (seen["remote_addr"], seen["remote_port"]) == ("203.0.113.7", "51234")
    seen = echo_through(proxied, b"PROXY TCP6 2001:db8::7 ::1 8080 80\r\n")
    assert (seen["remote_addr"], seen["remote_port"]) == ("2001:db8::7", "8080")


def test_v2_names_the_client(proxied):
    seen = echo_through(proxied, v2_tcp4("198.51.100.9", 40000))
    assert (seen["remote_addr"], seen["remote_port"]) == ("198.51.100.9", "40000")
    seen = echo_through(proxied, v2_tcp6("2001:db8::9", 40001))
    assert (seen["remote_addr"], seen["remote_port"]) == ("2001:db8::9", "40001")


def test_local_and_unknown_keep_the_real_peer(proxied):
    # A balancer's health check: v2 LOCAL, or v1 UNKNOWN.
    assert echo_through(proxied, v2(0, 0x00, b""))["remote_addr"] == "127.0.0.1"
    assert echo_through(proxied, b"PROXY UNKNOWN\r\n")["remote_addr"] == "127.0.0.1"


def test_keep_alive_requests_share_the_header(proxied):
    with RawConn(proxied.address, timeout=10) as c:
        c.send(b"PROXY TCP4 203.0.113.8 10.0.0.1 1111 443\r\n" + REQUEST)
        assert c.read_response().json()["remote_addr"] == "203.0.113.8"
        c.send(REQUEST)
        assert c.read_response().json()["remote_addr"] == "203.0.113.8"


def test_forwarded_headers_from_the_named_client_are_not_trusted(proxied):
    # The client the header names is not a trusted proxy: its own
    # X-Forwarded-For is ignored.
    request = b"GET /echo HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n"
    assert (
        echo_through(proxied, b"PROXY TCP4 203.0.113.7 10.0.0.1 1 2\r\n", request)["remote_addr"]
        == "203.0.113.7"
    )


@pytest.mark.parametrize(
    "data",
    [
        REQUEST,  # no header at all
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n" + REQUEST,
        b"PROXY TCP4 ::1 10.0.0.1 1 2\r\n" + REQUEST,
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n" + REQUEST,
        b"PROXY SCTP 1.2.3.4 5.6.7.8 1 2\r\n" + REQUEST,
        b"PROXY TCP4 " + b"1" * 200 + b"\r\n",
        v2(1, 0x11, b"\x01\x02\x03") + REQUEST,
        V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12) + REQUEST,  # version 1 in a v2 header
        V2_SIGNATURE + b"\x21\x11\xff\xff",  # an address block too long
    ],
    ids=[
        "missing",
        "v1-fields",
        "v1-family",
        "v1-port",
        "v1-proto",
        "v1-long",
        "v2-short",
        "v2-version",
        "v2-huge",
    ],
)
def test_malformed_headers_close_the_connection(proxied, data):
    mark = proxied.mark()
    assert closed_without_answer(proxied, data)
    proxied.wait_for_log(r"closing connection from 127\.0\.0\.1:\d+: .*PROXY protocol", since=mark)


def test_incomplete_header_times_out(tandem_factory):
    t = tandem_factory("wsgi_app:app", "--proxy-protocol", "--header-timeout", "1", workers=1)
    start = time.monotonic()
    assert closed_without_answer(t, b"PROXY TCP4 1.2.3.4")
    assert 0.8 < time.monotonic() - start < 5
    t.wait_for_log("PROXY protocol header incomplete after the header timeout")


def test_header_comes_before_tls(tandem_factory, tmp_path):
    ca = trustme.CA()
    files = ServerFiles(ca, tmp_path)
    t = tandem_factory("wsgi_app:app", "--proxy-protocol", *files.args, workers=1)
    raw = socket.create_connection(t.address, timeout=10)
    raw.sendall(v2_tcp4("198.51.100.20", 5555))
    with client_context(ca).wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(REQUEST)
        data = b""
        while b"}" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert b'"remote_addr": "198.51.100.20"' in data
    assert b'"url_scheme": "https"' in data


def test_without_the_flag_a_header_is_a_bad_request(server):
    with RawConn(server.address, timeout=10) as c:
        c.send(b"PROXY TCP4 203.0.113.7 10.0.0.1 1 2\r\n" + REQUEST)
        assert c.read_response().status == 400
