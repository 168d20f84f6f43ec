"""The machine's description and the markdown tables: medians, ratios, every round."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path

from harness import cpu
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


def _summary_table(rounds: list[Round], servers: list[str], baselines: list[str]) -> list[str]:
    medians: dict[str, dict[str, float]] = {}
    for srv in servers:
        ok = [r.result for r in rounds if r.server == srv and r.result is not None]
        if ok:
            medians[srv] = {
                "rps": statistics.median(x.rps for x in ok),
                "p50": statistics.median(x.p50_ms for x in ok),
                "p99": statistics.median(x.p99_ms for x in ok),
                "errors": sum(x.errors for x in ok),
                "n": len(ok),
            }
    baselines = [b for b in baselines if b in medians]
    head = ["server", "req/s (median)", "p50", "p99", "errors"] + [f"× {b}" for b in baselines]
    out = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for srv in servers:
        n_failed = sum(1 for r in rounds if r.server == srv and r.result is None)
        if srv not in medians:
            out.append(f"| {srv} | failed" + " |" * (len(head) - 1))
            continue
        m = medians[srv]
        note = f" ({m['n']} of {m['n'] + n_failed} rounds)" if n_failed else ""
        row = [srv + note, f"{m['rps']:,.0f}", fmt_ms(m["p50"]), fmt_ms(m["p99"])]
        row += [f"{m['errors']:,}"] + [f"{m['rps'] / medians[b]['rps']:.2f}" for b in baselines]
        out.append("| " + " | ".join(row) + " |")
    return out


def _rounds_table(rounds: list[Round]) -> list[str]:
    out = [
        "| round | server | req/s | p50 | p99 | requests | non-2xx | socket errors "
        "| server CPU | wrk CPU | other CPU |",
        "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rounds:
        if r.result is None:
            first = (r.error.splitlines() or ["?"])[0].replace("|", "/")
            out.append(f"| {r.round} | {r.server} | failed: {first}" + " |" * 9)
            continue
        x = r.result
        sock = ", ".join(f"{k} {v}" for k, v in x.socket_errors.items() if v) or "0"
        c = x.cpu
        use = f"{c.server_cores:.2f} | {c.wrk_cores:.2f} | {c.other_pct:.0f}%" if c else "| |"
        out.append(
            f"| {r.round} | {r.server} | {x.rps:,.0f} | {fmt_ms(x.p50_ms)} | "
            f"{fmt_ms(x.p99_ms)} | {x.requests:,} | {x.non2xx:,} | {sock} | {use} |"
        )
    return out


def markdown(
    rounds: list[Round],
    *,
    settings: str,
    scenarios: list[tuple[str, str]],  # (name, description), in run order
    servers: list[str],
    baselines: list[str],
    machine: dict[str, str],
    versions: list[str],
    started: dt.datetime,
    load_after: str,
) -> str:
    out = [f"# tandem benchmark, {started:%Y-%m-%d %H:%M} UTC", "", settings, ""]
    out.append(f"- machine: {machine['cpu']}; {machine['cores']}; {machine['kernel']}")
    out.append(
        f"- load average (1/5/15 min): {machine['load']} before, {load_after} after "
        f"(the run itself adds to it); CPUs {machine['busy']} busy in the second before the run"
    )
    out.append(f"- python {machine['python']}; {machine['wrk']}")
    out.append("- servers: " + "; ".join(versions))
    if machine["warning"]:
        out.append(f"- **warning: {machine['warning']}**")
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

    for name, description in scenarios:
        these = [r for r in rounds if r.scenario == name]
        out += [f"## {name}: {description}", ""]
        present = [s for s in servers if any(r.server == s for r in these)]
        out += _summary_table(these, present, baselines)
        out += [
            "",
            "Every round. Errors: non-2xx/3xx responses and socket errors, as wrk reports "
            "them. Server and wrk CPU: cores' worth used during the measurement (the "
            "kernel's loopback work, counted as softirq, is in neither). Other CPU: share "
            "of the whole machine used by processes this run did not start; above "
            f"{DISTURBED_PCT:.0f}%, that round was disturbed.",
            "",
        ]
        out += _rounds_table(these)
        out.append("")
    out.append(
        "req/s and latencies are medians over the rounds; errors are summed over them. "
        "× NAME is the median req/s divided by NAME's. "
        "Generated by `bench/run.py`; not edited by hand."
    )
    return "\n".join(out) + "\n"
