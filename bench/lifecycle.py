"""Worker lifecycle benchmarks on a small Django project (bench/apps/djbench).

1. Respawn: kill -9 an idle worker of `tandem -w 1` and time until a request
   sent right after the kill is answered by the replacement, with and
   without --preload (and gunicorn's sync worker, for reference).
2. Reloads under load: a bounded client loop (keep-alive connections) runs
   while the server gets 10 HUPs, one a second; count failed requests for
   tandem and for gunicorn.

Run after bench/setup.sh:  bench/.venv/bin/python bench/lifecycle.py [--rounds N]
Writes bench/results/<date>-lifecycle.md.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness.process import Running, free_port  # noqa: E402

VENV_BIN = HERE / ".venv" / "bin"
APPS = HERE / "apps"
HOST = "127.0.0.1"


def env():
    e = dict(os.environ)
    for key in ("PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS"):
        e.pop(key, None)
    e["PATH"] = f"{VENV_BIN}{os.pathsep}{e.get('PATH', '')}"
    return e


def start(name, argv, port, log_dir):
    server = Running(name, argv, APPS, env(), log_dir / f"{name}-{port}.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            if get(port, timeout=2)[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    server.stop(10)
    raise RuntimeError(f"{name} not ready after 60 s:\n{server.log_tail()}")


def get(port, timeout=30.0):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def tandem_argv(port, workers, *extra):
    return [
        str(VENV_BIN / "tandem"),
        "-w",
        str(workers),
        "-b",
        f"{HOST}:{port}",
        *extra,
        "djbench.wsgi",
    ]


def gunicorn_argv(port, workers):
    return [str(VENV_BIN / "gunicorn"), "-w", str(workers), "-b", f"{HOST}:{port}", "djbench.wsgi"]


def respawn_times(name, argv_for, rounds, log_dir):
    """Milliseconds from kill -9 of the only (idle) worker until a request
    is answered by its replacement."""
    port = free_port(HOST)
    server = start(name, argv_for(port), port, log_dir)
    times = []
    try:
        for _ in range(rounds):
            status, body = get(port)
            old = int(body)
            t0 = time.monotonic()
            os.kill(old, signal.SIGKILL)
            while True:
                try:
                    status, body = get(port)
                except OSError:
                    time.sleep(0.001)  # gunicorn: nothing accepts until the new worker does
                    continue
                if status == 200 and int(body) != old:
                    break
                if time.monotonic() - t0 > 30:
                    raise RuntimeError(f"{name}: no replacement after 30 s")
            times.append((time.monotonic() - t0) * 1000)
            time.sleep(0.5)
    finally:
        server.stop(10)
    return times


class Load:
    def __init__(self, port, threads=4, limit=60.0):
        self.port, self.limit = port, limit
        self.stop = threading.Event()
        self.ok = 0
        self.failed = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        deadline = time.monotonic() + self.limit
        conn = None
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                    else:
                        self.failed.append(str(resp.status))
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as err:
                with self.lock:
                    self.failed.append(type(err).__name__)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


def reload_failures(name, argv, port, log_dir, reloads=10):
    server = start(name, argv, port, log_dir)
    load = Load(port)
    try:
        for th in load.threads:
            th.start()
        time.sleep(1)
        for _ in range(reloads):
            os.kill(server.proc.pid, signal.SIGHUP)
            time.sleep(1)
        time.sleep(2)
    finally:
        load.stop.set()
        for th in load.threads:
            th.join(30)
        server.stop(10)
    return load.ok, load.failed


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="kills per respawn measurement")
    args = parser.parse_args(argv)
    log_dir = HERE / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    for name, argv_for in [
        ("tandem", lambda p: tandem_argv(p, 1)),
        ("tandem --preload", lambda p: tandem_argv(p, 1, "--preload")),
        ("gunicorn", lambda p: gunicorn_argv(p, 1)),
        ("gunicorn --preload", lambda p: gunicorn_argv(p, 1) + ["--preload"]),
    ]:
        print(f"respawn: {name} ...", flush=True)
        times = respawn_times(name.replace(" ", ""), argv_for, args.rounds, log_dir)
        rows.append((name, statistics.median(times), min(times), max(times)))

    reload_rows = []
    for name, argv_for in [
        ("tandem", lambda p: tandem_argv(p, 2)),
        ("gunicorn", lambda p: gunicorn_argv(p, 2)),
    ]:
        print(f"reloads under load: {name} ...", flush=True)
        port = free_port(HOST)
        ok, failed = reload_failures(name, argv_for(port), port, log_dir)
        kinds = ", ".join(f"{k} ×{failed.count(k)}" for k in sorted(set(failed))) or "-"
        reload_rows.append((name, ok, len(failed), kinds))

    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"# tandem lifecycle benchmark, {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"Django project bench/apps/djbench; machine: {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "## Respawn: kill -9 of an idle worker (-w 1) to the first request served by its"
        f" replacement ({args.rounds} kills)",
        "",
        "| server | median ms | min ms | max ms |",
        "|---|---:|---:|---:|",
        *[f"| {n} | {med:.1f} | {lo:.1f} | {hi:.1f} |" for n, med, lo, hi in rows],
        "",
        "## 10 HUP reloads, one a second, under a 4-connection keep-alive load (-w 2)",
        "",
        "| server | requests served | failed | failures |",
        "|---|---:|---:|---|",
        *[f"| {n} | {ok} | {bad} | {kinds} |" for n, ok, bad, kinds in reload_rows],
        "",
        "Generated by `bench/lifecycle.py`; not edited by hand.",
    ]
    report = "\n".join(lines) + "\n"
    out = HERE / "results" / f"{now:%Y-%m-%d}-lifecycle.md"
    out.write_text(report)
    print(report)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
