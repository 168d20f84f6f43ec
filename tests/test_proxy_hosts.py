"""Several hosts on one machine: two app nodes, each in a network namespace
of its own (a veth pair to this one, addresses from 10.231.7.0/24 that exist
only on those pairs), and a front node here proxying to both. Balancing,
failover when a node dies or its host drops off the network, rejoining,
timeouts, static and proxy routes together, X-Accel-Redirect.

Needs root (CI runs as root); skipped with the reason when `ip netns add`
fails. Every namespace and link is removed at teardown."""

import os
import subprocess
import textwrap
import threading
import time

import pytest
from conftest import wait_until

SUBNET = "10.231.7"
PORT = 8001


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


class Host:
    """A network namespace joined to this one by a veth pair: `n`-th /30 of SUBNET."""

    def __init__(self, name, n):
        self.ns = f"tdm{os.getpid() % 100000}{name}"
        self.link = f"tv{os.getpid() % 100000}{name}"
        self.here = f"{SUBNET}.{4 * n + 1}"
        self.addr = f"{SUBNET}.{4 * n + 2}"
        ip("netns", "add", self.ns)
        try:
            ip("link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
            ip("addr", "add", f"{self.here}/30", "dev", self.link)
            ip("link", "set", self.link, "up")
            self.inside("ip", "addr", "add", f"{self.addr}/30", "dev", "eth0")
            self.inside("ip", "link", "set", "eth0", "up")
            self.inside("ip", "link", "set", "lo", "up")
        except Exception:
            self.remove()
            raise

    def inside(self, *cmd):
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, *cmd],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )

    def set_link(self, up):
        """Takes the host off the network (or back): its side of the pair goes
        down, so packets to it are dropped on our side of the pair."""
        self.inside("ip", "link", "set", "eth0", "up" if up else "down")

    def remove(self):
        ip("link", "del", self.link, check=False)
        ip("netns", "del", self.ns, check=False)


@pytest.fixture
def hosts():
    probe = f"tdmprobe{os.getpid() % 100000}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(
            f"cannot create network namespaces here ('ip netns add' said: {r.stderr.strip()})"
        )
    ip("netns", "del", probe, check=False)
    made = []
    # Whatever happens to the pairs, nothing for SUBNET ever leaves this machine.
    ip("route", "replace", "blackhole", f"{SUBNET}.0/24")
    try:
        for i, name in enumerate("ab"):
            made.append(Host(name, i))
        # The pairs are up: each node answers pings from here.
        for h in made:
            wait_until(
                lambda h=h: (
                    subprocess.run(["ping", "-c1", "-W1", h.addr], capture_output=True).returncode
                    == 0
                    if os.path.exists("/usr/bin/ping")
                    else True
                ),
                timeout=10,
                message=f"{h.addr} reachable",
            )
        yield made
    finally:
        for h in made:
            h.remove()
        ip("route", "del", "blackhole", f"{SUBNET}.0/24", check=False)


def start_node(factory, host, name):
    return factory(
        "upstream_app:app",
        binds=(f"0.0.0.0:{PORT}",),
        workers=1,
        env={"NODE_NAME": name},
        prefix=("ip", "netns", "exec", host.ns),
    )


def start_front(factory, tmp_path, hosts, **options):
    (tmp_path / "static").mkdir(exist_ok=True)
    (tmp_path / "static" / "site.css").write_text("p{}")
    (tmp_path / "protected").mkdir(exist_ok=True)
    (tmp_path / "protected" / "file.txt").write_text("protected file")
    servers = ", ".join(f'"{h.addr}:{PORT}"' for h in hosts)
    extra = "\n".join(
        f"{k.replace('_', '-')} = {v!r}".replace("'", '"') for k, v in options.items()
    )
    config = (
        textwrap.dedent(f"""
        [[listen]]
        bind = "127.0.0.1:0"

        [[route]]
        prefix = "/static/"
        static = "static"

        [[route]]
        prefix = "/protected/"
        static = "protected"
        internal = true

        [[route]]
        prefix = "/"
        proxy = "apps"

        [upstream.apps]
        servers = [{servers}]
        """)
        + extra
        + "\n"
    )
    path = tmp_path / "front.toml"
    path.write_text(config)
    return factory(None, "--config", str(path), binds=(), workers=None, expect_listeners=1)


def nodes_of(front, count):
    return [front.get("/who").json()["node"] for _ in range(count)]


def bounded_load(front, seconds, threads=4, path="/who"):
    """GETs from `threads` clients for `seconds` (at most 5000 in all); returns the statuses."""
    statuses, deadline = [], time.monotonic() + seconds

    def run():
        while time.monotonic() < deadline and len(statuses) < 5000:
            try:
                statuses.append(front.get(path, timeout=10).status)
            except OSError as e:
                statuses.append(repr(e))

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    return workers, statuses


def test_front_spreads_load_over_hosts(tandem_factory, tmp_path, hosts):
    a, b = hosts
    start_node(tandem_factory, a, "a")
    start_node(tandem_factory, b, "b")
    front = start_front(tandem_factory, tmp_path, hosts, balance="round-robin")
    seen = nodes_of(front, 20)
    assert seen.count("a") == 10 and seen.count("b") == 10, seen
    # The nodes see the front's address on their link as the client.
    h = front.get("/who").json()["headers"]
    assert h["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert front.get("/static/site.css").body == b"p{}"
    assert front.get("/protected/file.txt").status == 404
    r = front.get("/accel?to=/protected/file.txt")
    assert (r.status, r.body) == (200, b"protected file"), front.log[-2000:]


def test_killed_node_loses_nothing_and_rejoins(tandem_factory, tmp_path, hosts):
    a, b = hosts
    node_a = start_node(tandem_factory, a, "a")
    start_node(tandem_factory, b, "b")
    front = start_front(
        tandem_factory, tmp_path, hosts, health_check="/health", health_interval=0.5, fail_timeout=1
    )
    workers, statuses = bounded_load(front, 3)
    time.sleep(1)
    node_a.stop()
    for w in workers:
        w.join()
    assert len(statuses) > 50 and set(statuses) == {200}, (
        len(statuses),
        set(statuses),
        front.log[-3000:],
    )
    front.wait_for_log(rf"server {a.addr}:{PORT}: (health check failed|out of service)")
    assert set(nodes_of(front, 6)) == {"b"}
    start_node(tandem_factory, a, "a")
    front.wait_for_log(rf"server {a.addr}:{PORT}: .*back in service", timeout=10)
    wait_until(lambda: "a" in nodes_of(front, 4), timeout=5, message="node a serving again")


def test_host_off_the_network_times_out_and_fails_over(tandem_factory, tmp_path, hosts):
    a, b = hosts
    start_node(tandem_factory, a, "a")
    start_node(tandem_factory, b, "b")
    front = start_front(
        tandem_factory,
        tmp_path,
        hosts,
        connect_timeout=0.5,
        response_timeout=1,
        max_fails=1,
        fail_timeout=30,
        balance="round-robin",
    )
    assert set(nodes_of(front, 4)) == {"a", "b"}
    # Its link goes down: connects to it time out, GETs go to b instead.
    a.set_link(False)
    try:
        # Requests sent on kept-alive connections to a get no answer: after
        # the response timeout they go to b, as a GET may.
        workers, statuses = bounded_load(front, 2, threads=2)
        for w in workers:
            w.join()
        assert statuses and set(statuses) == {200}, set(statuses)
        front.wait_for_log(rf"server {a.addr}:{PORT}: out of service")
    finally:
        a.set_link(True)


def test_slow_node_is_a_504(tandem_factory, tmp_path, hosts):
    a, _ = hosts
    start_node(tandem_factory, a, "a")
    front = start_front(tandem_factory, tmp_path, [a], response_timeout=1)
    start = time.monotonic()
    assert front.post("/sleep?s=3", b"").status == 504
    assert time.monotonic() - start < 2.5
    front.wait_for_log(
        rf"POST /sleep: 504, upstream apps server {a.addr}:{PORT}: no response head within 1s"
    )
