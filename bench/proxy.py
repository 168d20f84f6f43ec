#!/usr/bin/env python3
"""tandem as a reverse proxy against nginx, in front of the same upstreams.

Scenarios (each starts its upstreams once, so both proxies face the very same
processes):

- proxy-gunicorn: one gunicorn (sync workers) serving bench/apps/hello.py;
- proxy-two-nodes: two tandem app nodes serving bench/apps/hello.py.

Proxies: a tandem front node (`--config`, no app, no workers: one proxy route
to the pool, keep-alive to the upstreams, least-outstanding balancing) and
nginx (`proxy_pass` to an `upstream` block with `keepalive` and `least_conn`,
HTTP/1.1 to the upstreams, the same forwarding headers: X-Forwarded-For,
-Proto and -Host, which tandem always sends), each with as many
threads / worker processes as --proxy-workers. For each round, each proxy in
turn: start it, check it answers, warm up, measure with wrk, stop it. Medians
and ratios go to bench/results/ in run.py's format, followed by each proxy's
own CPU time per request (steadier than req/s, which depends on how the
upstreams happen to share the cores with everything else).

Reuses run.py's settings and bench/harness (process groups, wrk, CPU, report).
Run it with bench/.venv's python after `bash bench/setup.sh`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import BenchFailed, cpu, report, wrk
from harness.paths import APPS_DIR, HOST, RESULTS_DIR, venv
from harness.process import Running, first_line_of, free_port
from harness.servers import NGINX, nginx_command, server_env
from run import START_TIMEOUT, STOP_TIMEOUT, say

WARMUP_SECONDS = 1

APP = "hello:app"
BODY = b"Hello, world!\n"

# scenario -> (description, [(name, argv(port, workers))] of its upstreams)
SCENARIOS = {
    "proxy-gunicorn": (
        "proxy → one gunicorn (sync workers) serving the hello-world app",
        lambda port, w: [venv("gunicorn"), "-w", str(w), "-b", f"{HOST}:{port}", APP],
        1,
    ),
    "proxy-two-nodes": (
        "proxy → two tandem app nodes serving the hello-world app",
        lambda port, w: [venv("tandem"), APP, "-w", str(w), "-b", f"{HOST}:{port}"],
        2,
    ),
}


def tandem_front(conf_dir: Path, port: int, upstreams: list[int], workers: int) -> list[str]:
    servers = ", ".join(f'"{HOST}:{p}"' for p in upstreams)
    (conf_dir / "front.toml").write_text(
        f"""front-threads = {workers}
[[listen]]
bind = "{HOST}:{port}"
[[route]]
prefix = "/"
proxy = "apps"
[upstream.apps]
servers = [{servers}]
"""
    )
    return [venv("tandem"), "--config", str(conf_dir / "front.toml")]


def nginx_front(conf_dir: Path, port: int, upstreams: list[int], workers: int) -> list[str]:
    servers = "".join(f"server {HOST}:{p}; " for p in upstreams)
    http = f"""    keepalive_requests 1000000;
    upstream apps {{ least_conn; {servers} keepalive 32; }}
    server {{
        listen {HOST}:{port};
        location / {{
            proxy_pass http://apps;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
        }}
    }}
"""
    return nginx_command(conf_dir, workers, http)


PROXIES = {"tandem-front": tandem_front, "nginx": nginx_front}
VERSIONS = {"tandem-front": [venv("tandem"), "--version"], "nginx": [NGINX, "-v"]}


def measure(
    name: str, upstreams: list[int], groups: tuple[int, ...], args, tmp: Path, raw
) -> wrk.WrkResult:
    """One measurement of proxy `name` in front of the servers on ports
    `upstreams`, whose process groups are `groups`."""
    port = free_port(HOST)
    conf_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp))
    argv = PROXIES[name](conf_dir, port, upstreams, args.proxy_workers)
    url = f"http://{HOST}:{port}/"
    running = Running(name, argv, APPS_DIR, server_env(), tmp / f"{name}-{port}.log")
    try:
        running.wait_ready(url, BODY, START_TIMEOUT)
        wrk.run(url, WARMUP_SECONDS, args.connections, args.threads)
        before = cpu.snapshot(running.pgid, groups)
        result, text = wrk.run(url, args.duration, args.connections, args.threads)
        result.cpu = cpu.use(before, cpu.snapshot(running.pgid, groups))
        raw.write(f"### {name}\n$ {' '.join(argv)}\n{text}\n")
        running.check_alive()
        return result
    finally:
        running.stop(STOP_TIMEOUT)


def cpu_per_request(rounds: list[report.Round], scenarios: list[str]) -> str:
    """A table of each proxy's own CPU time per request, and its upstreams',
    medians over the rounds: how much of the machine the proxy takes from
    its upstreams, steadier than req/s when the upstreams' share of the
    cores decides it."""
    out = [
        "## CPU per request",
        "",
        "CPU time (user + system) per request, median over the rounds; lower is better. "
        "'proxy' is the proxy's own: on a machine shared with the upstreams, each µs of it "
        "is taken from them. 'upstreams' is theirs while behind that proxy: the same "
        "processes, whose cost per request changes with how the cores are shared.",
        "",
        "| scenario | "
        + " | ".join(f"{n}: proxy | {n}: upstreams" for n in PROXIES)
        + " | proxy × nginx |",
        "|---" + "|---:" * (2 * len(PROXIES) + 1) + "|",
    ]

    def per_request(sc: str, name: str, cores) -> float | None:
        values = [
            cores(r.result.cpu) * 1e6 / r.result.rps
            for r in rounds
            if r.scenario == sc and r.server == name and r.result and r.result.cpu
            if r.result.rps > 0
        ]
        return statistics.median(values) if values else None

    def us(v: float | None) -> str:
        return f"{v:.0f} µs" if v is not None else "?"

    for sc in scenarios:
        cells, own = [], {}
        for name in PROXIES:
            own[name] = per_request(sc, name, lambda c: c.server_cores)
            cells += [us(own[name]), us(per_request(sc, name, lambda c: c.known_cores))]
        t, n = own.get("tandem-front"), own.get("nginx")
        cells.append(f"{t / n:.2f}" if t and n else "?")
        out.append(f"| {sc} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--workers", type=int, default=2, help="workers of each upstream (default 2)")
    p.add_argument(
        "--proxy-workers", type=int, default=2, help="proxy threads/processes (default 2)"
    )
    p.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="subset of: " + ", ".join(SCENARIOS)
    )
    p.add_argument("--out", type=Path, help="markdown file (default bench/results/DATE-proxy.md)")
    args = p.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not scenarios or any(s not in SCENARIOS for s in scenarios):
        p.error(f"--scenarios: choose from {', '.join(SCENARIOS)}")
    if not shutil.which("wrk"):
        sys.exit("bench: wrk not found: run `bash bench/setup.sh` first")

    started = dt.datetime.now(dt.timezone.utc)
    machine = report.machine_info()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out_path = args.out or RESULTS_DIR / f"{started:%Y-%m-%d}-proxy.md"
    rounds: list[report.Round] = []
    with (
        tempfile.TemporaryDirectory(prefix="tandem-bench-proxy-") as tmp_name,
        open(out_path.with_suffix(".raw"), "w") as raw,
    ):
        tmp = Path(tmp_name)
        for sc in scenarios:
            _, upstream_argv, count = SCENARIOS[sc]
            backends = []
            try:
                for i in range(count):
                    port = free_port(HOST)
                    b = Running(
                        f"{sc}-upstream{i}",
                        upstream_argv(port, args.workers),
                        APPS_DIR,
                        server_env(),
                        tmp / f"{sc}-upstream{i}.log",
                    )
                    backends.append((b, port))
                    b.wait_ready(f"http://{HOST}:{port}/", BODY, START_TIMEOUT)
                ports = [port for _, port in backends]
                groups = tuple(b.pgid for b, _ in backends)
                for n in range(1, args.rounds + 1):
                    for name in PROXIES:
                        r = report.Round(n, sc, name)
                        try:
                            r.result = measure(name, ports, groups, args, tmp, raw)
                        except (BenchFailed, OSError, subprocess.TimeoutExpired) as e:
                            r.error = str(e) or e.__class__.__name__
                        rounds.append(r)
                        say(f"round {n}/{args.rounds} {sc} {name}: {report.one_line(r)}")
            finally:
                for b, _ in backends:
                    b.stop(STOP_TIMEOUT)

    text = report.markdown(
        rounds,
        settings=(
            f"Proxies with {args.proxy_workers} threads/worker processes; upstreams with "
            f"{args.workers} workers each; wrk {args.threads} threads, {args.connections} "
            f"connections, {args.duration} s per measurement after a {WARMUP_SECONDS} s warm-up; "
            f"{args.rounds} alternating rounds; all on {HOST}. Server CPU is the proxy's alone."
        ),
        scenarios=[(sc, SCENARIOS[sc][0], "") for sc in scenarios],
        servers=list(PROXIES),
        baselines=["nginx"],
        machine=machine,
        versions=[first_line_of(VERSIONS[name]) for name in PROXIES],
        started=started,
        load_after=report.load_average(),
    )
    text = text.replace("Generated by `bench/run.py`", "Generated by `bench/proxy.py`")
    text += "\n" + cpu_per_request(rounds, scenarios)
    out_path.write_text(text)
    print(text)
    say(f"wrote {out_path}")
    return 0 if all(r.result for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
