"""Run wrk against one URL and parse its report (with --latency)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

from harness import BenchFailed
from harness.cpu import CpuUse


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)  # connect, read, ...
    cpu: CpuUse | None = None  # filled in by the caller, who knows the server's group

    @property
    def errors(self) -> int:
        return self.non2xx + sum(self.socket_errors.values())


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value.strip())
    if not m:
        raise ValueError(f"unknown wrk duration {value!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse(out: str) -> WrkResult:
    def need(pattern: str) -> re.Match:
        m = re.search(pattern, out, re.MULTILINE)
        if not m:
            raise BenchFailed(f"wrk output lacks {pattern!r}:\n{out}")
        return m

    # wrk pads some values ("99%    1.02s "), so allow spaces before the newline.
    dist = need(r"Latency Distribution\n((?:\s+\d+%\s+\S+[ \t]*\n)+)").group(1)
    pct = {p: _ms(v) for p, v in re.findall(r"(\d+)%\s+(\S+)", dist)}
    if "50" not in pct or "99" not in pct:  # e.g. a run too short or too slow to fill them
        raise BenchFailed(f"wrk's latency distribution lacks p50 or p99:\n{out}")
    result = WrkResult(
        rps=float(need(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=pct["50"],
        p99_ms=pct["99"],
        requests=int(need(r"^\s+(\d+) requests in ").group(1)),
    )
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        result.non2xx = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        names = ("connect", "read", "write", "timeout")
        result.socket_errors = dict(zip(names, map(int, m.groups())))
    return result


def run(url: str, seconds: int, connections: int, threads: int) -> tuple[WrkResult, str]:
    """wrk for `seconds` against url: the parsed result and wrk's own text."""
    argv = ["wrk", "--latency", "--timeout", "5s", "-t", str(threads)]
    argv += ["-c", str(connections), "-d", f"{seconds}s", url]
    # wrk stops itself after -d; the timeout only guards against a hang.
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if out.returncode != 0:
        raise BenchFailed(f"wrk exited with {out.returncode}: {out.stderr.strip()}")
    return parse(out.stdout), out.stdout
