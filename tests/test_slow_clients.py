"""Slow and idle clients: each timeout end to end with 1-second values and a
raw socket that goes silent, and --max-connections."""

import socket
import time

import pytest
from conftest import RawConn

HEAD = b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n"


def closes_within(conn, seconds):
    """Reads until the server closes; returns (bytes read, seconds it took)."""
    start = time.monotonic()
    conn.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = conn.sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


@pytest.fixture
def timeouts(tandem_factory):
    return tandem_factory(
        "wsgi_app:app",
        "--header-timeout", "1",
        "--body-timeout", "1",
        "--keepalive-timeout", "1",
        "--send-timeout", "1",
        workers=1,
    )  # fmt: skip


def test_silent_new_connection_is_closed_after_header_timeout(timeouts):
    with RawConn(timeouts.address) as c:
        data, took = closes_within(c, 10)
    assert data == b""
    assert took >= 0.5


def test_incomplete_head_is_closed_after_header_timeout(timeouts):
    with RawConn(timeouts.address) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: h\r\n")
        data, _ = closes_within(c, 10)
    assert data == b""


def test_trickled_head_is_closed_although_bytes_keep_coming(timeouts):
    # One header line every 0.3 s: never idle for a whole second, but the
    # head as a whole takes longer than --header-timeout.
    with RawConn(timeouts.address) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: h\r\n")
        start = time.monotonic()
        closed = False
        for i in range(20):
            time.sleep(0.3)
            try:
                c.send(b"X-Slow-%d: 1\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            c.settimeout(0.01)
            try:
                if c.sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed, "a head trickling in for 6 s was never cut off"
        assert time.monotonic() - start < 6


def test_idle_keepalive_connection_is_closed(timeouts):
    with RawConn(timeouts.address) as c:
        c.send(HEAD)
        assert c.read_response().status == 200
        data, took = closes_within(c, 10)
    assert data == b""
    assert took >= 0.5


def test_keepalive_clock_does_not_run_while_the_app_works(timeouts):
    # The app takes longer than the keep-alive timeout; the answer still comes,
    # and the connection is still usable right after it.
    with RawConn(timeouts.address) as c:
        c.send(b"GET /sleep?s=1.5 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_response().status == 200
        c.send(HEAD)
        assert c.read_response().status == 200


def test_keepalive_zero_closes_after_each_response(tandem_factory):
    t = tandem_factory("wsgi_app:app", "--keepalive-timeout", "0", workers=1)
    with RawConn(t.address) as c:
        c.send(HEAD)
        r = c.read_response()
        assert r.status == 200
        assert r.get("Connection") == "close"
        data, _ = closes_within(c, 5)
    assert data == b""


def test_stalled_body_gets_408(timeouts):
    with RawConn(timeouts.address) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        r = c.read_response()
        assert r.status == 408
        assert r.get("Connection") == "close"
        data, _ = closes_within(c, 5)
    assert data == b""


def test_stalled_chunked_body_gets_408(timeouts):
    with RawConn(timeouts.address) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        assert c.read_response().status == 408


def test_body_timeout_is_idle_time_not_total_time(timeouts):
    # 8 bytes, one every 0.3 s: 2.4 s in all, never 1 s of silence.
    with RawConn(timeouts.address) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\n\r\n")
        for b in b"slowbody":
            time.sleep(0.3)
            c.send(bytes([b]))
        r = c.read_response()
    assert r.status == 200 and r.json()["body"] == "slowbody"


def test_client_that_stops_reading_is_cut_off(timeouts):
    # 20 MiB answer, a client that reads nothing: the front's writes stall
    # and the connection is closed long before the answer is through.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.settimeout(15)
    sock.connect(timeouts.address)
    try:
        sock.sendall(b"GET /big?mb=20 HTTP/1.1\r\nHost: h\r\n\r\n")
        time.sleep(4)  # send timeout 1 s, plus the app producing 20 MiB
        received = 0
        try:
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
        except ConnectionResetError:
            pass
    finally:
        sock.close()
    assert 0 < received < 20 << 20


def test_max_connections_leaves_extra_clients_waiting(tandem_factory):
    t = tandem_factory("wsgi_app:app", "--max-connections", "2", workers=1)
    held = [RawConn(t.address), RawConn(t.address)]
    try:
        for c in held:  # both are being served
            c.send(HEAD)
            assert c.read_response().status == 200
        with RawConn(t.address) as extra:  # the kernel still accepts it
            extra.send(HEAD)
            extra.settimeout(1.0)
            with pytest.raises(TimeoutError):
                extra.sock.recv(1, socket.MSG_PEEK)
            held.pop().close()  # a slot frees up: the waiting client is served
            extra.settimeout(10)
            assert extra.read_response().status == 200
        # The server is still healthy for everyone.
        assert t.get("/hello").status == 200
    finally:
        for c in held:
            c.close()
