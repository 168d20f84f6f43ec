#!/usr/bin/env python3
"""Compare tandem with its peers under the same load, in alternating rounds.

For each round, for each scenario, for each server: start the server on
127.0.0.1 with the same worker count, wait until it answers correctly, warm up
with a short wrk run, measure with wrk, stop the server (its own process group,
and nothing else). Medians over the rounds go into a markdown table, printed
and written to bench/results/.

Servers and scenarios are the two tables below (SERVERS, SCENARIOS): adding
one is adding an entry. The machinery is in bench/harness/. Standard library
only; run it with bench/.venv's python after `bash bench/setup.sh`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness import BenchFailed, cpu, report, wrk
from harness.process import Running, first_line_of, free_port

BENCH_DIR = Path(__file__).resolve().parent
APPS_DIR = BENCH_DIR / "apps"
HARNESS_DIR = BENCH_DIR / "harness"
# The example Django site, copied and set up by setup.sh (20 entries, static
# files collected with hashed names, mysite/settings_whitenoise.py added).
DJANGO_DIR = BENCH_DIR / ".django_site"
RESULTS_DIR = BENCH_DIR / "results"
VENV_BIN = BENCH_DIR / ".venv" / "bin"

HOST = "127.0.0.1"  # every server binds here and wrk targets only here
START_TIMEOUT = 30.0  # seconds for a server to answer its first request
STOP_TIMEOUT = 10.0  # seconds after SIGTERM before SIGKILL
WARMUP_SECONDS = 1
# a "× NAME" column for each one in the run
RATIO_BASELINES = ["gunicorn", "nginx+gunicorn", "granian", "nginx"]
# Files the static scenarios serve, written afresh by each run.
STATIC_DIR = Path(tempfile.gettempdir()) / "tandem-bench-static"


# --- scenarios -------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    app: str  # MODULE:CALLABLE, importable from cwd
    expect_body: bytes  # a correct answer is this, or contains it (checked before measuring)
    path: str | Callable[[], str] = "/"  # the URL path wrk requests (or what computes it)
    cwd: Path = APPS_DIR
    kind: str = "app"  # "app": a WSGI app; "static": files under STATIC_DIR served at /static/
    connections: int | None = None  # wrk connections, if not --connections
    static_size: int = 0  # for "static": the size of the file at `path`
    # Django: static files from the server's static route where it has one
    # (tandem, nginx), else from Django through WhiteNoise.
    django: bool = False

    def url_path(self) -> str:
        return self.path() if callable(self.path) else self.path


def hashed_static(name: str) -> Callable[[], str]:
    """The URL of collected static file `name`, with its hash (read from the manifest)."""

    def path() -> str:
        import json

        manifest = DJANGO_DIR / "staticfiles" / "staticfiles.json"
        try:
            paths = json.loads(manifest.read_text())["paths"]
        except OSError:
            sys.exit(f"bench: {manifest} missing: run `bash bench/setup.sh` first")
        return "/static/" + paths[name]

    return path


def static_content(size: int) -> bytes:
    """Deterministic CSS-looking bytes of exactly `size` bytes."""
    line = b".c%08d { color: #123456; margin: 0 auto; }\n"
    text = b"".join(line % i for i in range(size // len(line % 0) + 1))
    return text[:size]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            name="hello",
            description="hello-world WSGI app, 14-byte text/plain body",
            app="hello:app",
            expect_body=b"Hello, world!\n",
        ),
        Scenario(
            name="django-page",
            description="the example Django site's list page: 20 rows from SQLite through a"
            " template (DEBUG off)",
            app="mysite.wsgi:application",
            expect_body=b'<li class="entry">',
            cwd=DJANGO_DIR,
            django=True,
        ),
        Scenario(
            name="django-static",
            description="a hashed static file of the same site (admin/css/base.css, ~22 KB)",
            app="mysite.wsgi:application",
            expect_body=b"--header-bg",
            path=hashed_static("admin/css/base.css"),
            cwd=DJANGO_DIR,
            django=True,
        ),
        Scenario(
            name="static-10k",
            description="a 10 KB CSS file from disk (64 connections)",
            app="hello:app",
            expect_body=static_content(10 * 1024),
            path="/static/app.css",
            kind="static",
            connections=64,
            static_size=10 * 1024,
        ),
        Scenario(
            name="static-5m",
            description="a 5 MB file from disk (8 connections)",
            app="hello:app",
            expect_body=static_content(5 * 1024 * 1024),
            path="/static/big.css",
            kind="static",
            connections=8,
            static_size=5 * 1024 * 1024,
        ),
    ]
}


def prepare_static() -> None:
    STATIC_DIR.mkdir(exist_ok=True)
    for sc in SCENARIOS.values():
        if sc.kind == "static":
            (STATIC_DIR / sc.path.rpartition("/")[2]).write_bytes(static_content(sc.static_size))
    STATIC_DIR.chmod(0o755)


# --- servers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    # (scenario, workers, port) -> argv; the server runs with cwd=scenario.cwd
    command: Callable[[Scenario, int, int], list[str]]
    version: list[str]  # argv that prints the version
    kinds: tuple[str, ...] = ("app",)  # the scenario kinds it can serve


def venv(exe: str) -> str:
    return str(VENV_BIN / exe)


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def whitenoise(sc: Scenario) -> list[str]:
    """The prefix that makes a Django scenario's app serve /static/ itself."""
    return ["env", "DJANGO_SETTINGS_MODULE=mysite.settings_whitenoise"] if sc.django else []


def tandem(sc: Scenario, workers: int, port: int) -> list[str]:
    argv = [venv("tandem"), sc.app, "-w", str(workers), "-b", f"{HOST}:{port}"]
    if sc.kind == "static":
        argv += ["--static", f"/static/={STATIC_DIR}"]
    elif sc.django:
        argv += ["--static", "/static/=staticfiles"]
    return argv


def nginx(sc: Scenario, workers: int, port: int) -> list[str]:
    # nginx alone serving the same directory: `workers` worker processes, sendfile on.
    conf_dir = Path(tempfile.mkdtemp(prefix="tandem-bench-nginx-"))
    (conf_dir / "nginx.conf").write_text(
        f"""daemon off;
master_process on;
worker_processes {workers};
pid {conf_dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {conf_dir}/body;
    proxy_temp_path {conf_dir}/proxy;
    fastcgi_temp_path {conf_dir}/fastcgi;
    uwsgi_temp_path {conf_dir}/uwsgi;
    scgi_temp_path {conf_dir}/scgi;
    server {{
        listen {HOST}:{port};
        location /static/ {{ alias {STATIC_DIR}/; }}
    }}
}}
"""
    )
    return [NGINX, "-p", str(conf_dir), "-c", str(conf_dir / "nginx.conf")]


def gunicorn(sc: Scenario, workers: int, port: int) -> list[str]:
    # sync workers, gunicorn's default
    return whitenoise(sc) + [venv("gunicorn"), "-w", str(workers), "-b", f"{HOST}:{port}", sc.app]


def nginx_gunicorn(sc: Scenario, workers: int, port: int) -> list[str]:
    argv = ["bash", str(HARNESS_DIR / "nginx_gunicorn.sh"), HOST, str(port), str(workers), sc.app]
    return argv + (["staticfiles"] if sc.django else [])


def granian(sc: Scenario, workers: int, port: int) -> list[str]:
    argv = [venv("granian"), "--interface", "wsgi", "--workers", str(workers)]
    return whitenoise(sc) + argv + ["--host", HOST, "--port", str(port), sc.app]


SERVERS: dict[str, Server] = {
    s.name: s
    for s in [
        Server("tandem", tandem, [venv("tandem"), "--version"], kinds=("app", "static")),
        Server("gunicorn", gunicorn, [venv("gunicorn"), "--version"]),
        Server("nginx+gunicorn", nginx_gunicorn, [NGINX, "-v"]),
        Server("granian", granian, [venv("granian"), "--version"]),
        Server("nginx", nginx, [NGINX, "-v"], kinds=("static",)),
    ]
}


# --- one measurement -------------------------------------------------------------


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    # Variables the servers read that would change what is being compared.
    for key in list(env):
        if key in ("PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS") or key.startswith("GRANIAN_"):
            del env[key]
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def measure(server: Server, sc: Scenario, args, log_dir: Path, raw) -> wrk.WrkResult:
    port = free_port(HOST)
    url = f"http://{HOST}:{port}{sc.url_path()}"
    argv = server.command(sc, args.workers, port)
    log = log_dir / f"{server.name}-{sc.name}-{port}.log"
    running = Running(server.name, argv, sc.cwd, server_env(), log)
    try:
        running.wait_ready(url, sc.expect_body, START_TIMEOUT)
        connections = sc.connections or args.connections
        wrk.run(url, WARMUP_SECONDS, connections, args.threads)
        before = cpu.snapshot(running.pgid)
        result, text = wrk.run(url, args.duration, connections, args.threads)
        result.cpu = cpu.use(before, cpu.snapshot(running.pgid))
        raw.write(f"### {server.name} {sc.name}\n$ {' '.join(argv)}\n{text}\n")
        running.check_alive()
        return result
    finally:
        running.stop(STOP_TIMEOUT)


# --- the run ---------------------------------------------------------------------


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds of 4 s (unless given)")
    p.add_argument("--rounds", type=int, help="alternating rounds (default 3)")
    p.add_argument("--duration", type=int, help="seconds per measurement (default 10)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--workers", type=int, default=2, help="workers per server (default 2)")
    for name, table in (("servers", SERVERS), ("scenarios", SCENARIOS)):
        help = "comma-separated subset of: " + ", ".join(table)
        p.add_argument(f"--{name}", default=",".join(table), help=help)
    p.add_argument("--out", type=Path, help="markdown file (default bench/results/DATE-NAMES.md)")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.duration = args.duration or (4 if args.quick else 10)
    for attr, table in (("servers", SERVERS), ("scenarios", SCENARIOS)):
        names = [n.strip() for n in getattr(args, attr).split(",") if n.strip()]
        unknown = [n for n in names if n not in table]
        if unknown or not names:
            p.error(
                f"--{attr}: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(table)}"
            )
        setattr(args, attr, names)
    if min(args.rounds, args.duration, args.connections, args.threads, args.workers) < 1:
        p.error("--rounds, --duration, --connections, --threads and --workers must be ≥ 1")
    return args


def serves(server: str, scenario: str) -> bool:
    """Whether a server takes part in a scenario (nginx serves no WSGI app)."""
    return SCENARIOS[scenario].kind in SERVERS[server].kinds


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("bench: wrk not found: run `bash bench/setup.sh` first")
    for srv in args.servers:
        exe = SERVERS[srv].version[0]
        if not os.access(exe, os.X_OK):
            sys.exit(f"bench: {exe} not found: run `bash bench/setup.sh` first")

    started = dt.datetime.now(dt.timezone.utc)
    machine = report.machine_info()
    versions = [first_line_of(SERVERS[srv].version) for srv in args.servers]
    each = WARMUP_SECONDS + args.duration + 3
    pairs = sum(1 for sc in args.scenarios for srv in args.servers if serves(srv, sc))
    total = args.rounds * pairs * each
    say(
        f"{args.rounds} rounds × {pairs} scenario/server pairs, about {total // 60} min "
        f"{total % 60} s; load {machine['load']}, CPUs {machine['busy']} busy"
    )
    if machine["warning"]:
        say(f"warning: {machine['warning']}")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"{started:%Y-%m-%d}-{'-'.join(args.scenarios)}" + ("-quick" if args.quick else "")
    out_path = args.out or RESULTS_DIR / f"{stem}.md"
    raw_path = out_path.with_suffix(".raw")

    if any(SCENARIOS[sc].kind == "static" for sc in args.scenarios):
        prepare_static()
    rounds: list[report.Round] = []
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp, open(raw_path, "w") as raw:
        for n in range(1, args.rounds + 1):
            for sc in args.scenarios:
                for srv in args.servers:
                    if not serves(srv, sc):
                        continue
                    r = report.Round(n, sc, srv)
                    try:
                        r.result = measure(SERVERS[srv], SCENARIOS[sc], args, Path(tmp), raw)
                    except (BenchFailed, OSError, subprocess.TimeoutExpired) as e:
                        r.error = str(e) or e.__class__.__name__
                    rounds.append(r)
                    say(f"round {n}/{args.rounds} {sc} {srv}: {report.one_line(r)}")

    text = report.markdown(
        rounds,
        settings=(
            f"{args.workers} workers per server; wrk {args.threads} threads, "
            f"{args.connections} connections, {args.duration} s per measurement after a "
            f"{WARMUP_SECONDS} s warm-up; {args.rounds} alternating rounds; all on {HOST}."
        ),
        scenarios=[(sc, SCENARIOS[sc].description) for sc in args.scenarios],
        servers=args.servers,
        baselines=RATIO_BASELINES,
        machine=machine,
        versions=versions,
        started=started,
        load_after=report.load_average(),
    )
    out_path.write_text(text)
    print(text)
    say(f"wrote {out_path} (raw wrk output in {raw_path})")
    return 0 if all(r.result for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
