"""Where the machine's CPU went during a measurement.

Split three ways: the server's process group, wrk (our reaped children), and
everything else. "Everything else" is what makes a figure untrustworthy on a
shared 2-core machine, so every round reports it. Linux /proc only.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

from harness.process import process_stats

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Snapshot:
    when: float
    total: int  # all ticks: user nice system idle iowait irq softirq steal
    # user + nice + system + steal. irq and softirq are left out: they are charged
    # to no process, and loopback traffic is mostly softirq.
    busy: int
    group: int  # ticks used by the server's process group (with its reaped children)
    children: float  # ticks used by our own reaped children, i.e. wrk runs
    known: int = 0  # ticks used by other process groups this run started (upstreams)


@dataclass
class CpuUse:
    server_cores: float  # cores' worth of CPU the server used
    wrk_cores: float
    other_pct: float  # share of the whole machine used by processes not ours
    known_cores: float = 0.0  # the other process groups this run started (upstreams)


def _group_ticks(pgid: int) -> int:
    return sum(
        sum(int(x) for x in fields[11:15])
        for _, fields in process_stats()
        if int(fields[2]) == pgid
    )


def _machine_ticks() -> list[int]:
    with open("/proc/stat") as f:
        t = [int(x) for x in f.readline().split()[1:9]]
    return t + [0] * (8 - len(t))


def snapshot(pgid: int, known: tuple[int, ...] = ()) -> Snapshot:
    """`known`: process groups this run started besides the server's (a
    proxy's upstreams), counted apart rather than as other work."""
    t = _machine_ticks()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Snapshot(
        when=time.monotonic(),
        total=sum(t),
        busy=t[0] + t[1] + t[2] + t[7],
        group=_group_ticks(pgid),
        children=(ru.ru_utime + ru.ru_stime) * CLK_TCK,
        known=sum(_group_ticks(g) for g in known),
    )


def use(a: Snapshot, b: Snapshot) -> CpuUse:
    wall_ticks = max(b.when - a.when, 1e-9) * CLK_TCK
    server = b.group - a.group
    wrk = b.children - a.children
    known = b.known - a.known
    other = max(0.0, (b.busy - a.busy) - server - wrk - known)
    return CpuUse(
        server_cores=server / wall_ticks,
        wrk_cores=wrk / wall_ticks,
        other_pct=100.0 * other / max(b.total - a.total, 1),
        known_cores=known / wall_ticks,
    )


def busy_percent(seconds: float = 1.0) -> float:
    """How busy the whole machine is over `seconds`, every process counted."""
    try:
        t0 = _machine_ticks()
        time.sleep(seconds)
        t1 = _machine_ticks()
    except (OSError, ValueError):
        return 0.0
    total = sum(t1) - sum(t0)
    idle = (t1[3] + t1[4]) - (t0[3] + t0[4])
    return 100.0 * (total - idle) / total if total > 0 else 0.0
