#!/usr/bin/env python3
"""HTTP/2 and TLS handshakes: tandem against granian and nginx, with h2load.

Two scenarios, in alternating rounds like bench/run.py:

- `h2-hello`: the hello-world app over cleartext HTTP/2 (prior knowledge),
  h2load with C clients × M concurrent streams each, against tandem and
  granian (`--interface wsgi --http 2`), same workers.
- `tls-handshakes`: one request per TLS connection (the servers close after
  each response: tandem `--keepalive-timeout 0`, nginx `keepalive_timeout 0`,
  so h2load reconnects with a full handshake every time), HTTP/1.1, a 14-byte
  static file, tandem `--static` against nginx alone with as many worker
  processes; the same ECDSA P-256 certificate for both, session resumption
  off on nginx (tandem's rustls does not resume by default: no tickets).

Requests/s are the median over the rounds. Standard library only, plus
h2load (Debian's nghttp2-client) and openssl (for the certificate); run it
with bench/.venv's python after `bash bench/setup.sh`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import BenchFailed, report
from harness.process import Running, first_line_of, free_port
from harness.servers import nginx_command, server_env

BENCH_DIR = Path(__file__).resolve().parent
APPS_DIR = BENCH_DIR / "apps"
RESULTS_DIR = BENCH_DIR / "results"
VENV_BIN = BENCH_DIR / ".venv" / "bin"
HOST = "127.0.0.1"
BODY = b"Hello, world!\n"
VERSIONS = [
    ["h2load", "--version"],
    [str(VENV_BIN / "tandem"), "--version"],
    [str(VENV_BIN / "granian"), "--version"],
    ["/usr/sbin/nginx", "-v"],
]


def tandem_h2(work: Path, workers: int, port: int) -> list[str]:
    return [str(VENV_BIN / "tandem"), "hello:app", "-w", str(workers), "-b", f"{HOST}:{port}"]


def granian_h2(work: Path, workers: int, port: int) -> list[str]:
    return [
        str(VENV_BIN / "granian"),
        *("--interface", "wsgi", "--http", "2", "--workers", str(workers)),
        *("--host", HOST, "--port", str(port), "hello:app"),
    ]


def tandem_tls(work: Path, workers: int, port: int) -> list[str]:
    return [
        *tandem_h2(work, workers, port),
        *("--certfile", str(work / "cert.pem"), "--keyfile", str(work / "key.pem")),
        *("--static", f"/static/={work / 'static'}", "--keepalive-timeout", "0"),
    ]


def nginx_tls(work: Path, workers: int, port: int) -> list[str]:
    conf = Path(tempfile.mkdtemp(prefix="nginx-", dir=work))
    http = f"""    keepalive_timeout 0;
    ssl_session_cache off;
    ssl_session_tickets off;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{
        listen {HOST}:{port} ssl;
        ssl_certificate {work / "cert.pem"};
        ssl_certificate_key {work / "key.pem"};
        location /static/ {{ alias {work / "static"}/; }}
    }}
"""
    return nginx_command(conf, workers, http)


# scenario -> (url template, h2load options, {server: command})
SCENARIOS = {
    "h2-hello": (
        "http://{host}:{port}/",
        lambda a: ["-c", str(a.clients), "-m", str(a.streams), "-t", "2"],
        {"tandem": tandem_h2, "granian": granian_h2},
    ),
    "tls-handshakes": (
        "https://{host}:{port}/static/hello.txt",
        lambda a: ["--h1", "-c", str(a.clients), "-t", "2"],
        {"tandem": tandem_tls, "nginx": nginx_tls},
    ),
}


def wait_ready(running: Running, url: str, options: list[str], timeout: float = 30) -> None:
    """Until one request through h2load (so in the protocol measured) gets a 2xx."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running.check_alive()
        argv = ["h2load", *[o for o in options if o == "--h1"], "-n", "1", "-c", "1", url]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
        if re.search(r"status codes: 1 2xx", out):
            return
        time.sleep(0.2)
    raise BenchFailed(f"{running.name} not ready after {timeout:.0f}s:\n{running.log_tail()}")


def h2load(url: str, options: list[str], seconds: float, count: bool) -> tuple[float, str]:
    """Runs h2load for about `seconds`; with `count`, for a number of requests
    instead (h2load's -D does not reconnect when the server closes)."""
    if count:
        probe, _ = h2load(url, options, 0, False)
        limit = ["-n", str(max(200, int(probe * seconds)))]
    else:
        limit = ["-D", str(seconds)] if seconds else ["-n", "200"]
    argv = ["h2load", *options, *limit, url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds * 3 + 60).stdout
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out
    )
    if not rate or not done:
        raise BenchFailed(f"cannot read h2load's output:\n{out[-800:]}")
    if int(done.group(2)) > int(done.group(1)) // 100:
        raise BenchFailed(f"more than 1% of requests failed:\n{out[-800:]}")
    return float(rate.group(1)), out


def prepare(work: Path) -> None:
    # nginx's workers run as another user: they must be able to read these.
    work.chmod(0o755)
    (work / "static").mkdir(mode=0o755)
    (work / "static" / "hello.txt").write_bytes(BODY)
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ),
            *("-nodes", "-days", "2", "-subj", "/CN=localhost"),
            *("-keyout", str(work / "key.pem"), "-out", str(work / "cert.pem")),
        ],
        check=True,
        capture_output=True,
    )
    (work / "key.pem").chmod(0o644)  # a throwaway key, read by nginx's master as root anyway


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clients", type=int, default=16, help="h2load clients (connections)")
    p.add_argument("--streams", type=int, default=16, help="h2-hello: streams per connection")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    if any(s not in SCENARIOS for s in scenarios):
        p.error(f"--scenarios: choose from {', '.join(SCENARIOS)}")

    started = dt.datetime.now(dt.timezone.utc)
    machine = report.machine_info()
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="tandem-bench-h2-") as tmp:
        work = Path(tmp)
        prepare(work)
        raw = []
        for n in range(1, args.rounds + 1):
            for sc in scenarios:
                template, options, servers = SCENARIOS[sc]
                for name, command in servers.items():
                    port = free_port(HOST)
                    url = template.format(host=HOST, port=port)
                    argv_ = command(work, args.workers, port)
                    log = work / f"{name}-{sc}-{port}.log"
                    running = Running(name, argv_, APPS_DIR, server_env(), log)
                    try:
                        wait_ready(running, url, options(args))
                        count = sc == "tls-handshakes"
                        h2load(url, options(args), 1, count)  # warm-up
                        rate, out = h2load(url, options(args), args.duration, count)
                        running.check_alive()
                        results.setdefault((sc, name), []).append(rate)
                        raw.append(f"### {name} {sc}\n$ {' '.join(argv_)}\n{out}")
                        print(f"bench: round {n} {sc} {name}: {rate:,.0f} req/s", file=sys.stderr)
                    except (BenchFailed, OSError, subprocess.TimeoutExpired) as e:
                        print(f"bench: round {n} {sc} {name}: failed: {e}", file=sys.stderr)
                    finally:
                        running.stop(10)

    lines = [
        f"# HTTP/2 and TLS handshakes ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"{args.workers} workers per server; h2load {args.clients} clients, 2 threads"
        f" ({args.streams} streams per connection for h2-hello), {args.duration} s per"
        f" measurement after a 1 s warm-up; {args.rounds} alternating rounds; all on {HOST}.",
        f"Machine: {machine['cpu']}, {machine['cores']}; load before: {machine['load']};"
        f" busy before: {machine['busy']}. {machine['warning']}",
        "; ".join(first_line_of(v) for v in VERSIONS),
        "",
        "| scenario | server | req/s (median) | rounds | × tandem |",
        "|---|---|---:|---|---:|",
    ]
    for sc in scenarios:
        base = results.get((sc, "tandem"))
        for name in SCENARIOS[sc][2]:
            got = results.get((sc, name))
            if not got:
                lines.append(f"| {sc} | {name} | failed | | |")
                continue
            med = statistics.median(got)
            ratio = f"{med / statistics.median(base):.2f}" if base else ""
            each = ", ".join(f"{r:,.0f}" for r in got)
            lines.append(f"| {sc} | {name} | {med:,.0f} | {each} | {ratio} |")
    text = "\n".join(lines) + "\n"
    out = args.out or RESULTS_DIR / f"{started:%Y-%m-%d}-h2-tls.md"
    out.write_text(text)
    out.with_suffix(".raw").write_text("\n".join(raw))
    print(text)
    return (
        0
        if all(
            len(results.get((sc, n), [])) == args.rounds
            for sc in scenarios
            for n in SCENARIOS[sc][2]
        )
        else 1
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
