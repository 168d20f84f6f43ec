#!/usr/bin/env python3
"""Compare tandem with its peers under the same load, in alternating rounds.

For each round, for each scenario, for each server: start the server on
127.0.0.1 with the same worker count, wait until it answers correctly, note
its memory, warm up with a short wrk run, measure with wrk, note its memory
again, stop the server (its own process group, and nothing else). Then the
slow-clients scenario (one round: wrk and a new-client probe with and
without attackers holding 1,000 connections), and before everything the
in-process ceiling (the app called in a loop in one Python process). Medians
over the rounds go into a markdown report and a PNG chart in bench/results/.

Scenarios and servers are tables in harness/scenarios.py and
harness/servers.py; the rest of the machinery is in bench/harness/. Run it
with bench/.venv's python after `bash bench/setup.sh`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import BenchFailed, chart, cpu, memory, report, slowclients, wrk
from harness.paths import HARNESS_DIR, HOST, RESULTS_DIR
from harness.process import Running, first_line_of, free_port
from harness.scenarios import SCENARIOS, Scenario, prepare_static
from harness.servers import SERVERS, Server, server_env, whitenoise

START_TIMEOUT = 30.0  # seconds for a server to answer its first request
STOP_TIMEOUT = 10.0  # seconds after SIGTERM before SIGKILL
# Before SIGTERM, requests wrk left queued must finish: tandem (0.1.0) otherwise
# waits out its whole --graceful-timeout. One more request, answered after
# them, says they have (at most this many seconds).
DRAIN_TIMEOUT = 10.0
SLOW = "slow-clients"  # the scenario that is not a plain wrk run (harness/slowclients.py)
ALL_SCENARIOS = [*SCENARIOS, SLOW]
# a "× NAME" column for each one in the run
RATIO_BASELINES = ["nginx+gunicorn", "nginx"]
NOFILE = 16384  # open files wanted for us and the servers we start (1,000 attackers + wrk)


# --- one measurement -------------------------------------------------------------


def start(server: Server, sc: Scenario, args, log_dir: Path) -> tuple[Running, int, str]:
    port = free_port(HOST)
    url = f"http://{HOST}:{port}{sc.url_path()}"
    argv = server.command(sc, args.workers, port)
    log = log_dir / f"{server.name}-{sc.name}-{port}.log"
    running = Running(server.name, argv, sc.cwd, server_env(), log)
    try:
        running.wait_ready(url, sc.expect_body, START_TIMEOUT)
    except BaseException:
        running.stop(STOP_TIMEOUT)
        raise
    return running, port, url


def drain(url: str) -> None:
    """Wait until a request sent now is answered, i.e. those queued before it are."""
    try:
        with urllib.request.urlopen(url, timeout=DRAIN_TIMEOUT) as resp:
            resp.read()
    except OSError:
        pass  # then SIGTERM and, if need be, SIGKILL after STOP_TIMEOUT


def measure(server: Server, sc: Scenario, args, log_dir: Path, raw) -> wrk.WrkResult:
    running, _, url = start(server, sc, args, log_dir)
    try:
        rest = memory.at_rest(running.pgid)
        connections = sc.connections or args.connections
        if args.warmup:
            wrk.run(url, args.warmup, connections, args.threads)
        before = cpu.snapshot(running.pgid)
        result, text = wrk.run(
            url,
            args.duration,
            connections,
            args.threads,
            slow_path=sc.slow_path,
            slow_every=sc.slow_every,
        )
        result.cpu = cpu.use(before, cpu.snapshot(running.pgid))
        result.mem_rest, result.mem_load = rest, memory.group_memory(running.pgid)
        raw.write(f"### {server.name} {sc.name}\n$ {' '.join(running.argv)}\n{text}\n")
        running.check_alive()
        drain(url)
        return result
    finally:
        running.stop(STOP_TIMEOUT)


def slow_clients(server: Server, args, log_dir: Path, raw) -> slowclients.SlowResult:
    sc = SCENARIOS["hello"]
    res = slowclients.SlowResult(server.name)
    try:
        running, port, url = start(server, sc, args, log_dir)
    except (BenchFailed, OSError) as e:
        res.error = str(e)
        return res

    def wrk_run() -> wrk.WrkResult:
        result, text = wrk.run(url, args.slow_duration, args.connections, args.threads)
        raw.write(f"### {server.name} {SLOW}\n{text}\n")
        return result

    try:
        if args.warmup:
            wrk.run(url, args.warmup, args.connections, args.threads)
        base = slowclients.Phase("none", probe=slowclients.probe(port, args.probes))
        base.wrk = wrk_run()
        base.pss_kb = memory.group_memory(running.pgid)[1]
        res.phases.append(base)
        # Each attack is compared with a no-attack run just before it, and
        # with --slow-pairs N the pair is repeated N times (medians reported):
        # consecutive runs of one server differ by more than most attacks cost.
        before = base.wrk
        for attack in slowclients.ATTACKS:
            for pair in range(args.slow_pairs):
                if before is None:
                    before = wrk_run()
                phase = slowclients.under_attack(attack, port, running.pgid, wrk_run, args.probes)
                phase.base_rps = before.rps
                before = None
                res.phases.append(phase)
                which = f"{attack} ({pair + 1}/{args.slow_pairs})"
                say(f"{SLOW} {server.name} {which}: {slowclients.phase_line(phase)}")
                running.check_alive()
        drain(url)
    except (BenchFailed, OSError, subprocess.TimeoutExpired) as e:
        res.error = str(e) or e.__class__.__name__
    finally:
        running.stop(STOP_TIMEOUT)
    return res


def ceiling(sc: Scenario, seconds: float) -> report.Ceiling:
    """The app called in a loop in one Python process (harness/ceiling.py)."""
    argv = [sys.executable, str(HARNESS_DIR / "ceiling.py"), sc.app, sc.url_path(), str(seconds)]
    # Django: the WhiteNoise settings, so /static/ is served by Python as well.
    env = server_env()
    for assignment in whitenoise(sc)[1:]:
        key, _, value = assignment.partition("=")
        env[key] = value
    try:
        out = subprocess.run(
            argv, cwd=sc.cwd, env=env, capture_output=True, text=True, timeout=seconds + 60
        )
        data = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as e:
        return report.Ceiling(sc.name, 0.0, error=str(e) or e.__class__.__name__)
    if data is None:
        return report.Ceiling(sc.name, 0.0, error=(out.stderr.strip().splitlines() or ["?"])[-1])
    return report.Ceiling(sc.name, data["calls"] / max(data["cpu_s"], 1e-9))


# --- the run ---------------------------------------------------------------------


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Default: 3 rounds of 6 s, about 15 minutes on 2 cores; --quick: 1 round of"
        " 2 s, under 3 minutes. The estimate is printed before anything starts.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 round of 2 s (1 s under slow clients), no warm-up, fewer probes",
    )
    p.add_argument("--rounds", type=int, help="alternating rounds (default 3; 1 with --quick)")
    p.add_argument(
        "--slow-pairs",
        type=int,
        default=1,
        help="slow-clients: (no attack, attack) pairs per attack, medians reported (default 1)",
    )
    p.add_argument("--duration", type=int, help="seconds per measurement (default 6; 2 --quick)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--workers", type=int, default=2, help="workers per server (default 2)")
    for name, names in (("servers", list(SERVERS)), ("scenarios", ALL_SCENARIOS)):
        help = "comma-separated subset of: " + ", ".join(names)
        p.add_argument(f"--{name}", default=",".join(names), help=help)
    p.add_argument("--out", type=Path, help="markdown file (default bench/results/DATE[-...].md)")
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.duration is None:
        args.duration = 2 if args.quick else 6
    args.warmup = 0 if args.quick else 1  # seconds of wrk before each measurement
    args.probes = 5 if args.quick else 30
    # seconds of each wrk run in the slow-clients scenario (4 per server)
    args.slow_duration = 1 if args.quick else args.duration
    args.ceiling_seconds = 0.5 if args.quick else 3.0
    for attr, names in (("servers", list(SERVERS)), ("scenarios", ALL_SCENARIOS)):
        given = [n.strip() for n in getattr(args, attr).split(",") if n.strip()]
        unknown = [n for n in given if n not in names]
        if unknown or not given:
            p.error(
                f"--{attr}: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(names)}"
            )
        setattr(args, attr, [n for n in names if n in given])  # in table order
    if (
        min(
            args.rounds,
            args.duration,
            args.connections,
            args.threads,
            args.workers,
            args.slow_pairs,
        )
        < 1
    ):
        p.error(
            "--rounds, --duration, --connections, --threads, --workers and --slow-pairs must be ≥ 1"
        )
    return args


def serves(server: str, scenario: str) -> bool:
    """Whether a server takes part in a scenario (nginx alone serves no WSGI app)."""
    kind = "app" if scenario == SLOW else SCENARIOS[scenario].kind
    return kind in SERVERS[server].kinds


def scenario_seconds(args, scenario: str) -> float:
    """The estimated wall time of one scenario over the whole run (measured on 2 cores)."""
    servers = [s for s in args.servers if serves(s, scenario)]
    if scenario == SLOW:
        # start, warm-up; per pair of each attack a no-attack and an attack
        # wrk run, a probe set, an attacker opened and stopped
        pairs = 3 * args.slow_pairs
        each = (
            2
            + args.warmup
            + 2 * pairs * args.slow_duration
            + (pairs + 1) * args.probes * 0.03
            + pairs * 2.5
        )
        return len(servers) * each
    sc = SCENARIOS[scenario]
    startup = 1.5 if sc.django else 0.6  # start, first answer, stop; Django imports more
    ceil = args.ceiling_seconds + 1 if sc.ceiling else 0
    each = startup + args.warmup + args.duration + 1.2  # + memory at rest, drain
    return ceil + args.rounds * len(servers) * each


def raise_nofile() -> None:
    """1,000 attacking connections need more than the usual 1,024 open files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


T0 = time.monotonic()


def say(msg: str) -> None:
    t = int(time.monotonic() - T0)
    print(f"bench [{t // 60:02d}:{t % 60:02d}]: {msg}", file=sys.stderr, flush=True)


def check_tools(args) -> None:
    needed = ["wrk"] + (["slowhttptest"] if SLOW in args.scenarios else [])
    for tool in needed:
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found: run `bash bench/setup.sh` first")
    for srv in args.servers:
        exe = SERVERS[srv].version[0]
        if not os.access(exe, os.X_OK):
            sys.exit(f"bench: {exe} not found: run `bash bench/setup.sh` first")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    check_tools(args)
    raise_nofile()

    started = dt.datetime.now(dt.timezone.utc)
    t_start = time.monotonic()
    machine = report.machine_info()
    versions = []
    for srv in args.servers:
        line = first_line_of(SERVERS[srv].version)
        line = line if srv.split("+")[0] in line.lower() else f"{srv} {line}"
        if line not in versions:  # nginx+gunicorn and nginx both say nginx's
            versions.append(line)
    budgets = {sc: scenario_seconds(args, sc) for sc in args.scenarios}
    total = sum(budgets.values())
    say(
        f"{len(args.scenarios)} scenarios, {args.rounds} rounds of {args.duration} s: "
        f"about {total // 60:.0f} min {total % 60:.0f} s; load {machine['load']}, "
        f"CPUs {machine['busy']} busy"
    )
    if machine["warning"]:
        say(f"warning: {machine['warning']}")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    # DATE.md for the whole default set; a subset names its scenarios and servers
    subset = [] if args.scenarios == ALL_SCENARIOS else list(args.scenarios)
    subset += [] if args.servers == list(SERVERS) else [s.replace("+", "-") for s in args.servers]
    stem = "-".join([f"{started:%Y-%m-%d}", *subset] + (["quick"] if args.quick else []))
    out_path = args.out or RESULTS_DIR / f"{stem}.md"
    raw_path = out_path.with_suffix(".raw")

    ceilings = {}
    for scn in args.scenarios:
        if scn != SLOW and SCENARIOS[scn].ceiling:
            ceilings[scn] = ceiling(SCENARIOS[scn], args.ceiling_seconds)
            say(f"in-process ceiling {scn}: {report.ceiling_line(ceilings[scn])}")
    wrk_scenarios = [s for s in args.scenarios if s != SLOW]
    if any(SCENARIOS[s].kind == "static" for s in wrk_scenarios):
        prepare_static()
    rounds: list[report.Round] = []
    slow: list[slowclients.SlowResult] = []
    spent = dict.fromkeys(args.scenarios, 0.0)
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp, open(raw_path, "w") as raw:
        for n in range(1, args.rounds + 1):
            for scn in wrk_scenarios:
                for srv in args.servers:
                    if not serves(srv, scn):
                        continue
                    r = report.Round(n, scn, srv)
                    # every scenario is bounded: past 1.5× its estimate, the rest is skipped
                    if spent[scn] > 1.5 * budgets[scn] + 30:
                        r.error = f"skipped: over the scenario's time budget ({budgets[scn]:.0f} s)"
                    else:
                        t0 = time.monotonic()
                        try:
                            r.result = measure(SERVERS[srv], SCENARIOS[scn], args, Path(tmp), raw)
                        except (BenchFailed, OSError, subprocess.TimeoutExpired) as e:
                            r.error = str(e) or e.__class__.__name__
                        spent[scn] += time.monotonic() - t0
                    rounds.append(r)
                    say(f"round {n}/{args.rounds} {scn} {srv}: {report.one_line(r)}")
        if SLOW in args.scenarios:
            for srv in args.servers:
                if not serves(srv, SLOW):
                    continue
                if spent[SLOW] > 1.5 * budgets[SLOW] + 30:
                    res = slowclients.SlowResult(srv)
                    res.error = f"skipped: over the scenario's time budget ({budgets[SLOW]:.0f} s)"
                else:
                    t0 = time.monotonic()
                    res = slow_clients(SERVERS[srv], args, Path(tmp), raw)
                    spent[SLOW] += time.monotonic() - t0
                slow.append(res)

    elapsed = time.monotonic() - t_start
    settings = (
        f"{args.workers} workers per server; wrk {args.threads} threads, "
        f"{args.connections} connections (unless a scenario says otherwise), "
        f"{args.duration} s per measurement"
        + (f" after a {args.warmup} s warm-up; " if args.warmup else " (no warm-up); ")
        + f"{args.rounds} alternating round(s); all on {HOST}. "
        f"The run took {elapsed // 60:.0f} min {elapsed % 60:.0f} s "
        f"(estimated {total // 60:.0f} min {total % 60:.0f} s)."
    )
    chart_path = out_path.with_suffix(".png")
    text = report.markdown(
        rounds,
        settings=settings,
        scenarios=[(s, SCENARIOS[s].description, SCENARIOS[s].note) for s in wrk_scenarios],
        servers=args.servers,
        baselines=RATIO_BASELINES,
        machine=machine,
        versions=versions,
        started=started,
        load_after=report.load_average(),
        ceilings=ceilings,
        workers=args.workers,
        slow=slow,
        chart_name=chart_path.name,
    )
    out_path.write_text(text)
    print(text)
    problem = chart.draw(rounds, slow, args.servers, wrk_scenarios, chart_path, started)
    if problem:
        say(f"no chart: {problem}")
    say(f"wrote {out_path} and {chart_path.name} (raw wrk output in {raw_path.name})")
    ok = all(r.result for r in rounds) and all(not s.error for s in slow)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
