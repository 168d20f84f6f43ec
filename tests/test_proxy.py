"""Proxy routes on loopback: a tandem front (no app, or with one) in front of
tandem app nodes and gunicorn, over TCP and unix sockets. Balancing,
failover, retries, timeouts, headers, buffering, X-Accel-Redirect.
(tests/test_proxy_hosts.py runs the same topology across network namespaces.)"""

import hashlib
import itertools
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    APPS,
    RawConn,
    Tandem,
    clean_env,
    free_port,
    ipv6_loopback_available,
    wait_until,
)


def node(factory, name, port=0, *extra, unix=None):
    bind = f"unix:{unix}" if unix else f"127.0.0.1:{port}"
    return factory("upstream_app:app", *extra, binds=(bind,), workers=1, env={"NODE_NAME": name})


def front(factory, tmp_path, config, *extra, name="front.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(config).lstrip())
    return factory(None, "--config", str(path), *extra, workers=None)


def upstream_table(servers, **options):
    lines = ["[upstream.apps]", "servers = [" + ", ".join(f'"{s}"' for s in servers) + "]"]
    lines += [f"{k.replace('_', '-')} = {json.dumps(v)}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


PROXY_ALL = '[[route]]\nprefix = "/"\nproxy = "apps"\n'


def can_connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def addr(t):
    return f"127.0.0.1:{t.port}"


@pytest.fixture
def two_nodes(tandem_factory):
    return node(tandem_factory, "a"), node(tandem_factory, "b")


def nodes_of(t, count, path="/who"):
    seen = []
    for _ in range(count):
        r = t.get(path)
        assert r.status == 200, r
        seen.append(r.json()["node"])
    return seen


def test_balancing_spreads_load_and_headers_pass(tandem_factory, tmp_path, two_nodes):
    a, b = two_nodes
    t = front(
        tandem_factory,
        tmp_path,
        PROXY_ALL + upstream_table([addr(a), addr(b)], balance="round-robin"),
    )
    seen = nodes_of(t, 20)
    assert seen.count("a") == 10 and seen.count("b") == 10, seen
    r = t.request(
        "GET",
        "/who?x=1",
        headers={
            "Host": "shop.example",
            "Connection": "keep-alive, X-Private",
            "X-Private": "1",
            "X-Forwarded-For": "6.6.6.6",
        },
    )
    seen = r.json()
    assert seen["query"] == "x=1"
    h = seen["headers"]
    assert h["HTTP_HOST"] == "shop.example"
    assert h["HTTP_X_FORWARDED_HOST"] == "shop.example"
    assert h["HTTP_X_FORWARDED_PROTO"] == "http"
    # The client (127.0.0.1) is a trusted proxy by default: its chain is kept.
    assert h["HTTP_X_FORWARDED_FOR"] == "6.6.6.6, 127.0.0.1"
    assert "HTTP_X_PRIVATE" not in h
    assert r.headers["X-Node"] in ("a", "b")


def test_untrusted_clients_cannot_extend_the_chain(tandem_factory, tmp_path, two_nodes):
    a, _ = two_nodes
    t = front(
        tandem_factory, tmp_path, PROXY_ALL + upstream_table([addr(a)]), "--forwarded-allow-ips", ""
    )
    h = t.get("/who", headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}).json()[
        "headers"
    ]
    assert h["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert h["HTTP_X_FORWARDED_PROTO"] == "http"


def test_weights_and_least_outstanding(tandem_factory, tmp_path, two_nodes):
    a, b = two_nodes
    t = front(
        tandem_factory,
        tmp_path,
        PROXY_ALL + upstream_table([addr(a), f"{addr(b)} weight=3"], balance="round-robin"),
    )
    seen = nodes_of(t, 40)
    assert seen.count("b") == 30, seen
    # Least-outstanding: while a is busy with a slow request, b gets the rest.
    t2 = front(
        tandem_factory, tmp_path, PROXY_ALL + upstream_table([addr(a), addr(b)]), name="lo.toml"
    )
    slow = threading.Thread(target=lambda: t2.get("/sleep?s=1.5"))
    slow.start()
    time.sleep(0.3)
    busy = [t2.get("/who").json()["node"] for _ in range(6)]
    slow.join()
    assert len(set(busy)) == 1, busy


def test_bodies_both_ways_and_spilled_uploads(tandem_factory, tmp_path, two_nodes):
    a, _ = two_nodes
    t = front(tandem_factory, tmp_path, PROXY_ALL + upstream_table([addr(a)]))
    data = bytes(range(256)) * 12_000  # 3 MB: the front spills it to disk
    r = t.post("/who", data)
    seen = r.json()
    assert (seen["body_len"], seen["body_md5"]) == (len(data), hashlib.md5(data).hexdigest())
    assert seen["content_length"] == str(len(data))
    # Chunked from the client: the upstream gets a Content-Length.
    with t.raw() as c:
        c.send(b"POST /who HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        c.send(b"5\r\nhello\r\n0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200 and r.json()["content_length"] == "5"
    r = t.request("HEAD", "/who")
    assert r.status == 200 and r.body == b""


def test_streaming_responses_arrive_in_parts(tandem_factory, tmp_path, two_nodes):
    a, _ = two_nodes
    t = front(tandem_factory, tmp_path, PROXY_ALL + upstream_table([addr(a)]))
    with RawConn(t.address) as c:
        c.send(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
        head = c.read_head()
        start = time.monotonic()
        first = c.read_chunk()
        assert first == b"part 0\n" and time.monotonic() - start < 0.6, head


def test_refused_and_dead_servers_fail_over(tandem_factory, tmp_path, two_nodes):
    a, b = two_nodes
    dead = f"127.0.0.1:{free_port()}"
    t = front(
        tandem_factory,
        tmp_path,
        PROXY_ALL + upstream_table([dead, addr(a)], max_fails=2, fail_timeout=30),
    )
    # Every request succeeds; the refused server is ejected after 2 failures.
    assert nodes_of(t, 10) == ["a"] * 10
    t.wait_for_log(rf"server {dead}: out of service for 30s after 2 failures")
    # A POST is retried too when it never reached a server.
    assert t.post("/who", b"x").status == 200


def test_killed_node_loses_no_idempotent_request_and_rejoins(tandem_factory, tmp_path):
    port_a = free_port()
    a = node(tandem_factory, "a", port_a)
    b = node(tandem_factory, "b")
    t = front(
        tandem_factory,
        tmp_path,
        PROXY_ALL
        + upstream_table(
            [addr(a), addr(b)], health_check="/health", health_interval=0.5, fail_timeout=1
        ),
    )
    statuses, stop = [], threading.Event()

    def load():
        deadline = time.monotonic() + 15
        while not stop.is_set() and time.monotonic() < deadline and len(statuses) < 5000:
            statuses.append(t.get("/who", timeout=10).status)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for th in threads:
        th.start()
    time.sleep(0.7)
    a.stop()
    time.sleep(1.5)
    stop.set()
    for th in threads:
        th.join()
    assert len(statuses) > 50 and set(statuses) == {200}, (len(statuses), set(statuses))
    t.wait_for_log(rf"server 127\.0\.0\.1:{port_a}: (health check failed|out of service)")
    assert set(nodes_of(t, 6)) == {"b"}
    # Restarted on the same port, it passes the health check and gets requests again.
    node(tandem_factory, "a", port_a)
    t.wait_for_log(rf"server 127\.0\.0\.1:{port_a}: .*back in service", timeout=10)
    wait_until(lambda: "a" in nodes_of(t, 4), timeout=5, message="node a serving again")


def test_slow_upstream_is_a_504(tandem_factory, tmp_path, two_nodes):
    a, _ = two_nodes
    t = front(tandem_factory, tmp_path, PROXY_ALL + upstream_table([addr(a)], response_timeout=0.5))
    start = time.monotonic()
    r = t.get("/sleep?s=2")
    assert r.status == 504
    assert time.monotonic() - start < 1.8
    t.wait_for_log(
        rf"GET /sleep: 504, upstream apps server {addr(a)}: no response head within 500ms"
    )
    # A POST that timed out is not sent again.
    mark = t.mark()
    assert t.post("/sleep?s=2", b"x").status == 504
    time.sleep(0.2)
    assert "trying another" not in t.log_since(mark)


def test_static_proxy_and_app_routes_together(tandem_factory, tmp_path, two_nodes):
    a, b = two_nodes
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "app.css").write_text("body{}")
    t = front(
        tandem_factory,
        tmp_path,
        f"""
        workers = 1
        [[route]]
        prefix = "/static/"
        static = "static"
        [[route]]
        prefix = "/api/"
        proxy = "apps"
        [[route]]
        prefix = "/"
        host = "b.test"
        proxy = "only-b"
        [[route]]
        prefix = "/"
        app = "wsgi_app:app"
        {upstream_table([addr(a)])}
        [upstream.only-b]
        servers = ["{addr(b)}"]
        """,
    )
    assert t.get("/static/app.css").body == b"body{}"
    assert t.get("/api/who").json()["node"] == "a"
    assert t.get("/hello").body == b"Hello, world!\n"
    assert t.get("/hello", headers={"Host": "b.test:8080"}).json()["node"] == "b"


def test_unix_socket_upstream_and_gunicorn(tandem_factory, tmp_path):
    sock = tmp_path / "a.sock"
    node(tandem_factory, "unix-node", unix=sock)
    port = free_port()
    gunicorn = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{port}",
            "upstream_app:app",
        ],
        cwd=str(APPS),
        env=clean_env({"NODE_NAME": "gunicorn"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: can_connect(port), timeout=15, message="gunicorn listening")
        t = front(
            tandem_factory,
            tmp_path,
            PROXY_ALL
            + upstream_table([f"unix:{sock}", f"127.0.0.1:{port}"], balance="round-robin"),
        )
        seen = set(nodes_of(t, 8))
        assert seen == {"unix-node", "gunicorn"}, seen
        data = b"z" * 200_000
        for _ in range(4):
            assert t.post("/who", data).json()["body_len"] == len(data)
    finally:
        gunicorn.terminate()
        gunicorn.wait(10)


def test_x_accel_redirect_and_x_sendfile(tandem_factory, tmp_path, two_nodes):
    a, _ = two_nodes
    files = tmp_path / "protected"
    files.mkdir()
    (files / "report.txt").write_bytes(b"secret report\n")
    (files / "data.bin").write_bytes(b"\x00\x01" * 1000)
    t = front(
        tandem_factory,
        tmp_path,
        f"""
        workers = 1
        [[route]]
        prefix = "/protected/"
        static = "protected"
        internal = true
        [[route]]
        prefix = "/up/"
        proxy = "apps"
        [[route]]
        prefix = "/"
        app = "upstream_app:app"
        {upstream_table([addr(a)])}
        """,
    )
    # Clients can't ask for an internal location.
    assert t.get("/protected/report.txt").status == 404
    for prefix in ("/up", ""):  # from an upstream, and from the app
        r = t.get(f"{prefix}/accel?to=/protected/report.txt")
        assert (r.status, r.body) == (200, b"secret report\n")
        assert r.headers["Content-Disposition"] == "attachment; filename=report.txt"
        assert r.headers["Content-Type"].startswith("text/plain")
        r = t.get(f"{prefix}/accel?to=/protected/data.bin", headers={"Range": "bytes=0-3"})
        assert (r.status, r.body) == (206, b"\x00\x01\x00\x01")
        r = t.get(f"{prefix}/accel?file={files.resolve()}/report.txt")
        assert r.body == b"secret report\n"
        assert t.get(f"{prefix}/accel?to=/protected/missing.txt").status == 404
        assert t.get(f"{prefix}/accel?file=/etc/passwd").status == 404


def test_unknown_paths_without_an_app_are_404(tandem_factory, tmp_path, two_nodes):
    a, _ = two_nodes
    t = front(
        tandem_factory,
        tmp_path,
        '[[route]]\nprefix = "/api/"\nproxy = "apps"\n' + upstream_table([addr(a)]),
    )
    assert t.get("/api/who").status == 200
    assert t.get("/elsewhere").status == 404
    assert isinstance(t, Tandem) and t.worker_pids() == set()


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback on this machine")
def test_ipv6_upstream(tandem_factory, tmp_path):
    n = tandem_factory("upstream_app:app", binds=("[::1]:0",), workers=1, env={"NODE_NAME": "v6"})
    t = front(tandem_factory, tmp_path, PROXY_ALL + upstream_table([f"[::1]:{n.port}"]))
    assert nodes_of(t, 2) == ["v6", "v6"]


class RawUpstream:
    """A hand-written HTTP/1.1 server on loopback (TCP, or a unix socket at
    `unix`), for what real servers won't do on demand: hop-by-hop response
    headers, a stalled body, a reset after reading the request, chunked and
    close-delimited bodies, malformed heads, empty bodies, an answer given
    before reading the request body, a kept-alive connection closed while
    idle. Records the requests it reads (path, head) and the connection
    each came on (numbered in order of accept)."""

    def __init__(self, unix=None):
        if unix:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(str(unix))
            self.sock.listen(64)
            self.addr = f"unix:{unix}"
        else:
            self.sock = socket.create_server(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
            self.addr = f"127.0.0.1:{self.port}"
        self.seen = []
        self.heads = []  # the header lines of each request, in order
        self.connections = []  # the connection number of each request, in order
        self.closed_by_peer = []  # connections the proxy closed while idle
        self.stopped = False
        self._count = itertools.count()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(conn, next(self._count)), daemon=True
            ).start()

    def _serve(self, conn, number):
        with conn:
            f = conn.makefile("rb")
            while (more := self._answer(conn, f, number)) is True:
                pass
            if more is None:
                self.closed_by_peer.append(number)

    def _answer(self, conn, f, number):
        """Reads one request and answers it; whether to read another (None
        when the peer closed the connection instead of sending one)."""
        line = f.readline()
        if not line:
            return None
        method, path = line.split()[0].decode(), line.split()[1].decode()
        length = 0
        head = []
        while (header := f.readline()) not in (b"\r\n", b""):
            head.append(header.decode("latin-1").rstrip("\r\n"))
            if header.lower().startswith(b"content-length:"):
                length = int(header.split(b":")[1])
        self.seen.append(path)
        self.heads.append(head)
        self.connections.append(number)
        if path == "/no-read":
            # Neither reads the body nor answers: the proxy's write stalls.
            time.sleep(3)
            return False
        if path == "/refuse":
            # Refuses the body without reading it, as a server with a
            # smaller body limit does, and keeps the socket open a while.
            conn.sendall(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            time.sleep(1.5)
            return False
        f.read(length)
        if path == "/empty":
            # Empty bodies of every kind, each leaving the connection open.
            if method == "HEAD":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            elif "if-none-match: x" in [h.lower() for h in head]:
                conn.sendall(b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n")
            elif "x-status: 204" in [h.lower() for h in head]:
                conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            return True
        if path == "/reset":
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            return False
        if path == "/stall":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
            time.sleep(3)
            return False
        if path == "/stall-big":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 200_000)
            time.sleep(3)
            return False
        if path == "/chunked":
            # An interim 100, then chunks in separate writes, with an
            # extension and a trailer; the connection stays open.
            pieces = [
                b"HTTP/1.1 100 Continue\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"6;ext=1\r\nchunk-\r\n",
                b"7\r\ned body\r\n",
                b"0\r\nX-Trailer: t\r\n\r\n",
            ]
            for piece in pieces:
                conn.sendall(piece)
                time.sleep(0.01)
            return True
        if path == "/until-close":
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the ")
            time.sleep(0.05)
            conn.sendall(b"end")
            return False
        if path == "/ambiguous":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
                b"\r\n0\r\n\r\n"
            )
            return False
        if path == "/huge-head":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n"
            )
            return False
        if path == "/close-after":
            # Kept alive by its headers, then closed by the server while idle
            # (as a server with a short keep-alive timeout does).
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nkept")
            time.sleep(0.2)
            conn.shutdown(socket.SHUT_RDWR)
            return False
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n"
            b"Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nX-Kept: 1\r\n\r\nok"
        )
        return False

    def close(self):
        self.stopped = True
        self.sock.close()


@pytest.fixture
def raw_upstream():
    up = RawUpstream()
    yield up
    up.close()


def test_response_hop_by_hop_headers_stay_behind(tandem_factory, tmp_path, raw_upstream):
    t = front(
        tandem_factory, tmp_path, PROXY_ALL + upstream_table([f"127.0.0.1:{raw_upstream.port}"])
    )
    r = t.get("/hop")
    assert (r.status, r.body, r.headers["X-Kept"]) == (200, b"ok", "1")
    for gone in ("X-Hop", "Keep-Alive", "Upgrade"):
        assert gone not in r.headers, gone
    # The upstream's Connection: close is about its own connection, not the client's.
    with t.raw() as c:
        c.send(b"GET /hop HTTP/1.1\r\nHost: h\r\n\r\nGET /hop HTTP/1.1\r\nHost: h\r\n\r\n")
        assert [c.read_response().status for _ in range(2)] == [200, 200]


def raw_then_node_front(factory, tmp_path, raw, node_a):
    """A front whose pool takes turns between the raw server and node a, and
    never ejects either (each test counts what reaches the raw one)."""
    servers = [raw.addr, addr(node_a)]
    return front(
        factory,
        tmp_path,
        PROXY_ALL + upstream_table(servers, balance="round-robin", max_fails=100),
    )


def test_reset_upstream_retries_gets_never_posts(tandem_factory, tmp_path, raw_upstream, two_nodes):
    t = raw_then_node_front(tandem_factory, tmp_path, raw_upstream, two_nodes[0])
    for _ in range(4):
        assert t.get("/reset").status == 200  # reset by the raw server, answered by a
    resets = raw_upstream.seen.count("/reset")
    assert resets >= 1, raw_upstream.seen
    statuses = [t.post("/reset", b"data").status for _ in range(4)]
    # Each POST that reached the raw server was reset there and got 502: it
    # was never sent again (to a, which would have answered 200).
    posted = raw_upstream.seen.count("/reset") - resets
    assert posted >= 1 and statuses.count(502) == posted, (statuses, raw_upstream.seen)
    assert statuses.count(200) == 4 - posted
    t.wait_for_log(rf"POST /reset: 502, upstream apps server 127\.0\.0\.1:{raw_upstream.port}:")


def test_small_stalled_body_is_a_504_after_the_idle_timeout(tandem_factory, tmp_path, raw_upstream):
    # A small response is sent to the client whole or not at all: the head
    # waits for the body, and a body that stops coming makes a 504.
    up = upstream_table([f"127.0.0.1:{raw_upstream.port}"], idle_timeout=0.5)
    t = front(tandem_factory, tmp_path, PROXY_ALL + up)
    start = time.monotonic()
    r = t.get("/stall")
    assert r.status == 504
    assert time.monotonic() - start < 2.5
    t.wait_for_log(r"504, .*response body silent for 500ms")


def test_large_stalled_body_is_cut_after_the_idle_timeout(tandem_factory, tmp_path, raw_upstream):
    up = upstream_table([f"127.0.0.1:{raw_upstream.port}"], idle_timeout=0.5)
    t = front(tandem_factory, tmp_path, PROXY_ALL + up)
    with t.raw() as c:
        c.send(b"GET /stall-big HTTP/1.1\r\nHost: h\r\n\r\n")
        status = c.read_head()[1]
        start = time.monotonic()
        body = c.f.read()
        assert 0 < len(body) < 1_000_000
        assert time.monotonic() - start < 2.5
    assert status == 200
    t.wait_for_log(r"response body silent for 500ms")


def test_chunked_and_close_delimited_bodies_arrive_whole(tandem_factory, tmp_path, raw_upstream):
    t = front(
        tandem_factory, tmp_path, PROXY_ALL + upstream_table([f"127.0.0.1:{raw_upstream.port}"])
    )
    # Both on one client connection, so on one front thread and its pool.
    with t.raw() as c:
        for _ in range(2):
            c.send(b"GET /chunked HTTP/1.1\r\nHost: h\r\n\r\n")
            r = c.read_response()
            assert (r.status, r.body) == (200, b"chunk-ed body"), r
            assert r.get("X-Trailer") is None
    # The chunked response left its connection reusable: both came on one.
    assert raw_upstream.connections[0] == raw_upstream.connections[1]
    r = t.get("/until-close")
    assert (r.status, r.body, r.headers["Content-Type"]) == (200, b"until the end", "text/plain")
    t.get("/chunked")
    # A connection closed to end a body is not reused.
    assert raw_upstream.connections[3] != raw_upstream.connections[2]


def test_malformed_responses_are_502_and_not_retried(
    tandem_factory, tmp_path, raw_upstream, two_nodes
):
    t = raw_then_node_front(tandem_factory, tmp_path, raw_upstream, two_nodes[0])
    for path, why in [
        ("/ambiguous", "invalid response: both Content-Length and Transfer-Encoding"),
        ("/huge-head", "response head larger than 65536 bytes"),
    ]:
        statuses = [t.get(path).status for _ in range(2)]
        # One of the two went to the raw server and was answered 502 there;
        # the other was answered by node a.
        assert sorted(statuses) == [200, 502], (path, statuses)
        assert raw_upstream.seen.count(path) == 1
        t.wait_for_log(
            rf"GET {path}: 502, upstream apps server 127\.0\.0\.1:{raw_upstream.port}: {why}"
        )


def sockets_to(port, state):
    """This machine's TCP sockets towards 127.0.0.1:`port` in `state` (as
    /proc/net/tcp writes it: "01" established, "08" CLOSE_WAIT)."""
    rows = [r.split() for r in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return [r for r in rows if r[2] == f"0100007F:{port:04X}" and r[3] == state]


def test_an_idle_connection_the_server_closed_is_not_used(tandem_factory, tmp_path, raw_upstream):
    t = front(
        tandem_factory, tmp_path, PROXY_ALL + upstream_table([f"127.0.0.1:{raw_upstream.port}"])
    )
    assert t.get("/close-after").body == b"kept"
    assert len(sockets_to(raw_upstream.port, "01")) == 1  # the front's kept connection
    # The server closes its end 0.2 s after answering; the front closes its
    # own soon after, rather than keeping a half-closed socket (CLOSE_WAIT).
    time.sleep(0.4)
    wait_until(lambda: not sockets_to(raw_upstream.port, "08"), 3, message="no CLOSE_WAIT")
    assert t.get("/close-after").body == b"kept"
    time.sleep(0.5)
    # The server closed the kept connection meanwhile. Even a POST, which is
    # never sent twice, goes out on a fresh connection and succeeds.
    r = t.post("/close-after", b"form")
    assert (r.status, r.body) == (200, b"kept")
    assert len(set(raw_upstream.connections)) == 3


def test_idle_connections_are_closed_after_the_keepalive_timeout(
    tandem_factory, tmp_path, raw_upstream
):
    up = upstream_table([f"127.0.0.1:{raw_upstream.port}"], keepalive_timeout=0.5)
    t = front(tandem_factory, tmp_path, PROXY_ALL + up)
    assert t.get("/chunked").status == 200
    kept = raw_upstream.connections[0]
    time.sleep(0.3)
    assert raw_upstream.closed_by_peer == []
    wait_until(lambda: raw_upstream.closed_by_peer == [kept], timeout=3)
    # The next request opens a new connection.
    assert t.get("/chunked").status == 200
    assert raw_upstream.connections[1] != kept


def test_empty_responses_keep_their_connection(tandem_factory, tmp_path, raw_upstream):
    t = front(tandem_factory, tmp_path, PROXY_ALL + upstream_table([raw_upstream.addr]))
    asks = [
        (b"GET", b"X-Status: 204\r\n", 204),
        (b"GET", b"If-None-Match: x\r\n", 304),
        (b"GET", b"", 200),
        (b"HEAD", b"", 200),
    ]
    # All on one client connection, so on one front thread and its pool.
    with t.raw() as c:
        for method, extra, status in asks:
            c.send(method + b" /empty HTTP/1.1\r\nHost: h\r\n" + extra + b"\r\n")
            r = c.read_response(method.decode())
            assert (r.status, r.body) == (status, b""), (method, extra, r)
    assert raw_upstream.connections == [0, 0, 0, 0]


@pytest.fixture
def unix_upstreams(tmp_path):
    ups = [RawUpstream(unix=tmp_path / f"raw{i}.sock") for i in range(2)]
    yield ups
    for up in ups:
        up.close()


BIG = b"x" * 900_000  # in memory at the front, more than a unix socket buffers


def test_an_answer_before_the_body_is_read_reaches_the_client(
    tandem_factory, tmp_path, unix_upstreams
):
    up = unix_upstreams[0]
    t = front(tandem_factory, tmp_path, PROXY_ALL + upstream_table([up.addr], response_timeout=5))
    start = time.monotonic()
    r = t.post("/refuse", BIG)
    assert r.status == 413
    assert time.monotonic() - start < 3  # not the response timeout
    assert up.seen == ["/refuse"]


def test_a_post_cut_short_by_the_response_timeout_is_not_sent_again(
    tandem_factory, tmp_path, unix_upstreams
):
    servers = [up.addr for up in unix_upstreams]
    t = front(
        tandem_factory,
        tmp_path,
        PROXY_ALL
        + upstream_table(servers, balance="round-robin", response_timeout=1, max_fails=100),
    )
    # Each server reads the head and none of the body: the front's write
    # stalls half-way, and the response timeout ends the try. Part of the
    # POST went out, so it must not go to the other server.
    assert [t.post("/no-read", BIG).status for _ in range(2)] == [504, 504]
    assert sorted(len(up.seen) for up in unix_upstreams) == [1, 1]


def test_a_host_named_by_connection_still_reaches_the_upstream(
    tandem_factory, tmp_path, raw_upstream
):
    t = front(tandem_factory, tmp_path, PROXY_ALL + upstream_table([raw_upstream.addr]))
    with t.raw() as c:
        c.send(
            b"GET /empty HTTP/1.1\r\nHost: example.test\r\n"
            b"Connection: host, x-drop\r\nX-Drop: 1\r\n\r\n"
        )
        assert c.read_response().status == 200
    head = [line.lower() for line in raw_upstream.heads[0]]
    assert "host: example.test" in head
    assert not any(line.startswith(("x-drop", "connection")) for line in head), head
