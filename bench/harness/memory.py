"""Memory of a server: summed over every process of its process group.

RSS (/proc/PID/status VmRSS) counts a page shared by forked workers once per
process, so it overstates a pre-forking server; PSS (smaps_rollup) splits
each shared page between its sharers, so PSS sums to what the group really
holds. Both are reported. Linux /proc only.
"""

from __future__ import annotations

import time

from harness.process import process_stats


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def group_pids(pgid: int) -> list[int]:
    return [
        pid
        for pid, fields in process_stats()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X")
    ]


def group_memory(pgid: int) -> tuple[int, int]:
    """(summed RSS, summed PSS) in kB of the live processes in group pgid."""
    rss = pss = 0
    for pid in group_pids(pgid):
        rss += _kb(f"/proc/{pid}/status", "VmRSS:")
        pss += _kb(f"/proc/{pid}/smaps_rollup", "Pss:")
    return rss, pss


def at_rest(pgid: int, timeout: float = 5.0, step: float = 0.25) -> tuple[int, int]:
    """group_memory once it has settled: a server may answer its first request
    before all its workers have booted (or, behind nginx, before the app is
    loaded at all). Settled: three readings in a row within 2% of each other
    and with the same number of processes, or whatever it is after timeout."""
    deadline = time.monotonic() + timeout
    readings: list[tuple[int, int, int]] = []
    while True:
        rss, pss = group_memory(pgid)
        readings.append((len(group_pids(pgid)), rss, pss))
        last = readings[-3:]
        if len(last) == 3 and len({n for n, _, _ in last}) == 1:
            low, high = min(r for _, r, _ in last), max(r for _, r, _ in last)
            if high <= low * 1.02:
                return rss, pss
        if time.monotonic() >= deadline:
            return rss, pss
        time.sleep(step)
