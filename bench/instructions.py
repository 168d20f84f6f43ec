#!/usr/bin/env python3
"""Instructions per proxied request: tandem front against nginx, counted.

proxy.py's req/s and CPU figures move by several percent from run to run on
a shared 2-core machine; an instruction count does not. This runs each
proxy (one thread / one worker process) under valgrind's callgrind in front
of the same upstream, an nginx that answers every request itself (so the
upstream costs almost nothing), sends WARMUP requests, zeroes the counters,
sends REQUESTS more one after another on one keep-alive client connection,
and reads the proxy's user-space instructions. Two upstreams: one that keeps
its connections (the two-node case) and one that closes each after its
response (gunicorn's sync workers).

What it does not count: the kernel's work (system calls, loopback TCP),
which is most of a proxied request's CPU time and about equal for the two
(proxy.py's CPU table), and how the instructions run (cache misses, which
a machine shared with the upstreams makes dearer). So it is a guide for
work on the request path, not a replacement for proxy.py.

Needs valgrind (`bash bench/setup.sh` installs it). Run with bench/.venv's
python; the report goes to stdout and bench/results/DATE-instructions.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import BenchFailed
from harness.paths import APPS_DIR, HOST, RESULTS_DIR, venv
from harness.process import Running, free_port
from harness.servers import NGINX, nginx_command, server_env
from run import START_TIMEOUT, STOP_TIMEOUT, say

import proxy

BODY = b"Hello, world!\n"
# upstream name -> what its server block adds (closing: gunicorn's sync workers)
UPSTREAMS = {"keep-alive": "", "closing": "keepalive_timeout 0;"}


def upstream(conf_dir: Path, ports: dict[str, int]) -> list[str]:
    answer = 'location / { return 200 "Hello, world!\\n"; }'
    servers = "".join(
        f"    server {{ listen {HOST}:{ports[name]}; {extra} {answer} }}\n"
        for name, extra in UPSTREAMS.items()
    )
    return nginx_command(conf_dir, 1, "    keepalive_requests 1000000;\n" + servers)


def tandem_front(conf_dir: Path, port: int, up: int) -> list[str]:
    # proxy.py's front, one thread; its script run by the venv's python,
    # which valgrind then runs.
    return [venv("python")] + proxy.tandem_front(conf_dir, port, [up], 1)


def nginx_front(conf_dir: Path, port: int, up: int) -> list[str]:
    argv = proxy.nginx_front(conf_dir, port, [up], 1)
    # One process, so that callgrind follows the one that serves.
    conf = conf_dir / "nginx.conf"
    conf.write_text(conf.read_text().replace("master_process on;", "master_process off;"))
    return argv


PROXIES = {"tandem-front": tandem_front, "nginx": nginx_front}


def send(port: int, count: int) -> None:
    """`count` GETs one after another on one connection; each must be a 200."""
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
    with socket.create_connection((HOST, port), timeout=30) as s:
        buf = b""
        for _ in range(count):
            s.sendall(request.encode())
            while True:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    head = buf[:end].lower()
                    length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(buf) >= end + 4 + length:
                        if not head.startswith(b"http/1.1 200"):
                            raise BenchFailed(f"answer {head[:40]!r}")
                        buf = buf[end + 4 + length :]
                        break
                data = s.recv(65536)
                if not data:
                    raise BenchFailed("connection closed")
                buf += data


def count(name: str, up: int, args, tmp: Path) -> float:
    """Instructions per request of proxy `name` in front of port `up`."""
    port = free_port(HOST)
    conf_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp))
    out = conf_dir / "callgrind.out"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    argv += PROXIES[name](conf_dir, port, up)
    running = Running(name, argv, APPS_DIR, server_env(), conf_dir / "log")
    try:
        running.wait_ready(f"http://{HOST}:{port}/", BODY, START_TIMEOUT * 4)
        send(port, args.warmup)
        control = ["callgrind_control"]
        subprocess.run(control + ["--zero", str(running.proc.pid)], check=True, capture_output=True)
        send(port, args.requests)
        subprocess.run(control + ["--dump", str(running.proc.pid)], check=True, capture_output=True)
        for _ in range(100):  # the dump is written by the process itself
            dumps = list(conf_dir.glob("callgrind.out.*"))
            if dumps:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        summary = [
            line for line in dumps[0].read_text().splitlines() if line.startswith("summary:")
        ]
        return int(summary[0].split()[1]) / args.requests
    finally:
        running.stop(STOP_TIMEOUT * 4)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=3000, help="requests counted (default 3000)")
    p.add_argument("--warmup", type=int, default=300, help="requests before counting (default 300)")
    p.add_argument(
        "--out", type=Path, help="markdown file (default bench/results/DATE-instructions.md)"
    )
    args = p.parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found: run `bash bench/setup.sh` first")
    started = dt.datetime.now(dt.timezone.utc)
    out_path = args.out or RESULTS_DIR / f"{started:%Y-%m-%d}-instructions.md"
    rows = []
    with tempfile.TemporaryDirectory(prefix="tandem-bench-instructions-") as tmp_name:
        tmp = Path(tmp_name)
        ports = {name: free_port(HOST) for name in UPSTREAMS}
        up = Running("upstream", upstream(tmp, ports), APPS_DIR, server_env(), tmp / "upstream.log")
        try:
            for name in UPSTREAMS:
                up.wait_ready(f"http://{HOST}:{ports[name]}/", BODY, START_TIMEOUT)
            for kind in UPSTREAMS:
                counts = {name: count(name, ports[kind], args, tmp) for name in PROXIES}
                rows.append((kind, counts))
                say(f"{kind}: " + ", ".join(f"{n} {c:,.0f}" for n, c in counts.items()))
        finally:
            up.stop(STOP_TIMEOUT)
    version = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    lines = [
        f"# tandem benchmark: instructions per proxied request, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"User-space instructions (callgrind) per request, {args.requests} sequential requests "
        f"on one keep-alive client connection after {args.warmup} of warm-up; each proxy with "
        f"one thread / worker process, in front of an nginx that answers itself. {version}. "
        "Generated by "
        "`bench/instructions.py`; not edited by hand.",
        "",
        "| upstream connections | tandem-front | nginx | tandem × nginx |",
        "|---|---:|---:|---:|",
    ]
    for kind, counts in rows:
        t, n = counts["tandem-front"], counts["nginx"]
        lines.append(f"| {kind} | {t:,.0f} | {n:,.0f} | {t / n:.2f} |")
    text = "\n".join(lines) + "\n"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    print(text)
    say(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
