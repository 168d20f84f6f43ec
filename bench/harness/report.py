"""The markdown report: the machine, each scenario's medians and ratios, every
round, memory, the in-process ceiling and the slow-clients tables (the latter
made by slowclients.py). The chart is chart.py's."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path

from harness import cpu, slowclients
from harness.process import first_line_of
from harness.wrk import WrkResult

DISTURBED_PCT = 5.0  # other processes' share of the machine that flags a round
BUSY_BEFORE_PCT = 25.0  # machine busy before the run: warn


@dataclass
class Round:
    round: int
    scenario: str
    server: str
    result: WrkResult | None = None
    error: str = ""


@dataclass
class Ceiling:
    """The app called in a loop in one process: calls per CPU-second (one core)."""

    scenario: str
    per_core: float
    error: str = ""


def ceiling_line(c: Ceiling) -> str:
    return f"failed: {c.error}" if c.error else f"{c.per_core:,.0f} calls per CPU-second"


def median_rounds(rounds: list[Round], server: str) -> dict[str, float] | None:
    """A server's medians over its successful rounds (None if it has none)."""
    ok = [r.result for r in rounds if r.server == server and r.result is not None]
    if not ok:
        return None
    return {
        "rps": statistics.median(x.rps for x in ok),
        "p50": statistics.median(x.p50_ms for x in ok),
        "p99": statistics.median(x.p99_ms for x in ok),
        "p999": statistics.median(x.p999_ms for x in ok),
        "errors": sum(x.errors for x in ok),
        "n": len(ok),
    }


def machine_info() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    busy = cpu.busy_percent()
    warning = ""
    if busy > BUSY_BEFORE_PCT:
        warning = (
            f"the CPUs were {busy:.0f}% busy with other work just before the run; "
            "figures may be low and noisy"
        )
    return {
        "cpu": model,
        "cores": f"{len(os.sched_getaffinity(0))} usable (nproc), {os.cpu_count()} online",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "wrk": first_line_of(["wrk", "-v"]),
        "load": load_average(),
        "busy": f"{busy:.0f}%",
        "warning": warning,
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fmt_ms(ms: float) -> str:
    return f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:.2f} ms"


def one_line(r: Round) -> str:
    """A round as the progress line on stderr."""
    if r.result is None:
        return f"FAILED: {r.error}"
    x = r.result
    line = f"{x.rps:,.0f} req/s, p50 {fmt_ms(x.p50_ms)}, p99 {fmt_ms(x.p99_ms)}, errors {x.errors}"
    if x.cpu:
        c = x.cpu
        line += (
            f"; CPU server {c.server_cores:.2f}, wrk {c.wrk_cores:.2f}, other {c.other_pct:.0f}%"
        )
    return line


def _summary_table(
    rounds: list[Round], servers: list[str], baselines: list[str], ceiling_rps: float
) -> list[str]:
    medians = {srv: m for srv in servers if (m := median_rounds(rounds, srv))}
    baselines = [b for b in baselines if b in medians]
    head = ["server", "req/s (median)", "p50", "p99", "p99.9", "errors"]
    head += [f"× {b}" for b in baselines] + (["of ceiling"] if ceiling_rps else [])
    out = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for srv in servers:
        n_failed = sum(1 for r in rounds if r.server == srv and r.result is None)
        if srv not in medians:
            out.append(f"| {srv} | failed" + " |" * (len(head) - 1))
            continue
        m = medians[srv]
        note = f" ({m['n']} of {m['n'] + n_failed} rounds)" if n_failed else ""
        row = [srv + note, f"{m['rps']:,.0f}", fmt_ms(m["p50"]), fmt_ms(m["p99"])]
        row += [fmt_ms(m["p999"]), f"{m['errors']:,}"]
        row += [f"{m['rps'] / medians[b]['rps']:.2f}" for b in baselines]
        if ceiling_rps:
            share = 100 * m["rps"] / ceiling_rps
            row.append(f"{share:.1f}%" if share < 10 else f"{share:.0f}%")
        out.append("| " + " | ".join(row) + " |")
    return out


def _rounds_table(rounds: list[Round]) -> list[str]:
    out = [
        "| round | server | req/s | p50 | p99 | p99.9 | requests | non-2xx | socket errors "
        "| server CPU | wrk CPU | other CPU |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rounds:
        if r.result is None:
            first = (r.error.splitlines() or ["?"])[0].replace("|", "/")
            out.append(f"| {r.round} | {r.server} | failed: {first}" + " |" * 10)
            continue
        x = r.result
        sock = ", ".join(f"{k} {v}" for k, v in x.socket_errors.items() if v) or "0"
        c = x.cpu
        use = f"{c.server_cores:.2f} | {c.wrk_cores:.2f} | {c.other_pct:.0f}%" if c else "| |"
        out.append(
            f"| {r.round} | {r.server} | {x.rps:,.0f} | {fmt_ms(x.p50_ms)} | "
            f"{fmt_ms(x.p99_ms)} | {fmt_ms(x.p999_ms)} | {x.requests:,} | {x.non2xx:,} | "
            f"{sock} | {use} |"
        )
    return out


def _memory_table(rounds: list[Round], scenarios: list[str], servers: list[str]) -> list[str]:
    """Medians of summed RSS and PSS, at rest after boot and right after the load."""

    def mb(kb: float) -> str:
        return f"{kb / 1024:.0f}"

    out = [
        "| scenario | server | RSS at rest (MB) | RSS after load | PSS at rest | PSS after load |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for scn in scenarios:
        for srv in servers:
            ok = [
                r.result
                for r in rounds
                if r.scenario == scn and r.server == srv and r.result and r.result.mem_rest
            ]
            if not ok:
                continue
            rest = [x.mem_rest for x in ok if x.mem_rest]
            load = [x.mem_load for x in ok if x.mem_load]
            cells = [statistics.median(v[i] for v in vals) for vals in (rest, load) for i in (0, 1)]
            rss_rest, pss_rest, rss_load, pss_load = cells
            out.append(
                f"| {scn} | {srv} | {mb(rss_rest)} | {mb(rss_load)} | {mb(pss_rest)} "
                f"| {mb(pss_load)} |"
            )
    return out


def _header(machine: dict[str, str], versions: list[str], load_after: str) -> list[str]:
    out = [f"- machine: {machine['cpu']}; {machine['cores']}; {machine['kernel']}"]
    out.append(
        f"- load average (1/5/15 min): {machine['load']} at the start, {load_after} at the end "
        f"(the run itself adds to it); CPUs {machine['busy']} busy in the second before the run"
    )
    out.append(f"- python {machine['python']}; {machine['wrk']}")
    out.append("- servers: " + "; ".join(versions))
    if machine["warning"]:
        out.append(f"- **warning: {machine['warning']}**")
    return out


def markdown(
    rounds: list[Round],
    *,
    settings: str,
    scenarios: list[tuple[str, str, str]],  # (name, description, note), in run order
    servers: list[str],
    baselines: list[str],
    machine: dict[str, str],
    versions: list[str],
    started: dt.datetime,
    load_after: str,
    ceilings: dict[str, Ceiling] | None = None,
    workers: int = 0,
    slow: list[slowclients.SlowResult] | None = None,
    chart_name: str = "",
) -> str:
    ceilings = ceilings or {}
    out = [f"# tandem benchmark, {started:%Y-%m-%d %H:%M} UTC", "", settings, ""]
    out += _header(machine, versions, load_after)
    disturbed = [
        r.result.cpu.other_pct
        for r in rounds
        if r.result and r.result.cpu and r.result.cpu.other_pct > DISTURBED_PCT
    ]
    if disturbed:
        out.append(
            f"- **warning: {len(disturbed)} of {len(rounds)} measurements shared the CPUs "
            f"with other work (up to {max(disturbed):.0f}% of the machine); "
            "see 'other CPU' below**"
        )
    out.append("")
    if chart_name:
        out += [f"![req/s and p99 per scenario and server]({chart_name})", ""]

    for name, description, note in scenarios:
        these = [r for r in rounds if r.scenario == name]
        out += [f"## {name}: {description}", ""] + ([note, ""] if note else [])
        c = ceilings.get(name)
        ceiling_rps = c.per_core * workers if c and not c.error else 0.0
        if c:
            out += [
                f"In-process ceiling: {ceiling_line(c)} (the app called in a loop in one Python "
                f"process, no server), × {workers} workers = "
                + (f"{ceiling_rps:,.0f} req/s" if ceiling_rps else "?")
                + ". 'of ceiling' is each server's req/s as a share of it; wrk takes part of"
                " the same 2 cores, so 100% is out of reach for a server that runs the app in"
                " Python, and only a server answering without Python (a static route) can"
                " pass it.",
                "",
            ]
        present = [s for s in servers if any(r.server == s for r in these)]
        out += _summary_table(these, present, baselines, ceiling_rps)
        out += [
            "",
            "<details><summary>Every round</summary>",
            "",
            "Errors: non-2xx/3xx responses and socket errors, as wrk reports "
            "them. Server and wrk CPU: cores' worth used during the measurement (the "
            "kernel's loopback work, counted as softirq, is in neither). Other CPU: share "
            "of the whole machine used by processes this run did not start; above "
            f"{DISTURBED_PCT:.0f}%, that round was disturbed.",
            "",
        ]
        out += _rounds_table(these) + ["", "</details>", ""]

    if slow:
        out += [
            "## slow-clients: hello-world throughput and new clients while attackers hold "
            f"{slowclients.ATTACK_CONNECTIONS:,} connections",
            "",
            slowclients.DESCRIPTION,
            "",
        ]
        out += slowclients.tables(slow) + [""]
    if any(r.result and r.result.mem_rest for r in rounds):
        out += [
            "## memory: each server's whole process group, summed",
            "",
            "Medians over the rounds, in MB. RSS counts a page shared by forked workers once "
            "per process; PSS divides it among them, so PSS adds up to what the server really "
            "holds. 'At rest': after the first answer, once the figure has settled (every "
            "worker booted, the app loaded); 'after load': right after the wrk run.",
            "",
        ]
        out += _memory_table(rounds, [s[0] for s in scenarios], servers) + [""]
    out.append(
        "req/s and latencies are medians over the rounds; errors are summed over them. "
        "× NAME is the median req/s divided by NAME's. p99.9 comes from wrk's Lua `done()` "
        "hook (`latency:percentile(99.9)`). "
        "Generated by `bench/run.py`; not edited by hand."
    )
    return "\n".join(out) + "\n"
