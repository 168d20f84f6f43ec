"""Run wrk against one URL and parse its report.

Latency percentiles (p50, p99, p99.9) come from a Lua `done()` hook, since
wrk's own `--latency` table stops at 99%. For the mixed scenario the same
script sends one request in N to a slow path.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass, field

from harness import BenchFailed
from harness.cpu import CpuUse

PERCENTILES = ("50", "99", "99.9")
NO_REQUEST = "wrk completed no request"  # a BenchFailed that means "served nothing"

_DONE_LUA = """
done = function(summary, latency, requests)
  for _, p in ipairs({PERCENTILES}) do
    io.write(string.format("bench-latency %s %.0f\\n", tostring(p), latency:percentile(p)))
  end
end
""".replace("PERCENTILES", ", ".join(PERCENTILES))

# Each wrk thread has its own Lua state, so each sends every Nth request slow.
_SLOW_LUA = """
local n = 0
request = function()
  n = n + 1
  if n % EVERY == 0 then
    return wrk.format(nil, "PATH")
  end
  return wrk.format(nil, wrk.path)
end
"""


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    requests: int
    non2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)  # connect, read, ...
    cpu: CpuUse | None = None  # filled in by the caller, who knows the server's group
    # summed RSS and PSS of the server's processes (kB): at rest after boot, after the load
    mem_rest: tuple[int, int] | None = None
    mem_load: tuple[int, int] | None = None

    @property
    def errors(self) -> int:
        return self.non2xx + sum(self.socket_errors.values())


def parse(out: str) -> WrkResult:
    def need(pattern: str) -> re.Match:
        m = re.search(pattern, out, re.MULTILINE)
        if not m:
            raise BenchFailed(f"wrk output lacks {pattern!r}:\n{out}")
        return m

    pct = {p: float(us) / 1000 for p, us in re.findall(r"^bench-latency (\S+) (\d+)$", out, re.M)}
    missing = [p for p in PERCENTILES if p not in pct]
    if missing:
        raise BenchFailed(f"wrk's Lua hook printed no p{', p'.join(missing)}:\n{out}")
    result = WrkResult(
        rps=float(need(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=pct["50"],
        p99_ms=pct["99"],
        p999_ms=pct["99.9"],
        requests=int(need(r"^\s+(\d+) requests in ").group(1)),
    )
    if result.requests == 0:
        raise BenchFailed(f"{NO_REQUEST}:\n{out}")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        result.non2xx = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        names = ("connect", "read", "write", "timeout")
        result.socket_errors = dict(zip(names, map(int, m.groups())))
    return result


def run(
    url: str,
    seconds: int,
    connections: int,
    threads: int,
    *,
    slow_path: str = "",
    slow_every: int = 0,
) -> tuple[WrkResult, str]:
    """wrk for `seconds` against url: the parsed result and wrk's own text."""
    script = _DONE_LUA
    if slow_path and slow_every:
        script += _SLOW_LUA.replace("EVERY", str(slow_every)).replace("PATH", slow_path)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="tandem-bench-") as lua:
        lua.write(script)
        lua.flush()
        argv = ["wrk", "--timeout", "5s", "-t", str(threads), "-s", lua.name]
        argv += ["-c", str(connections), "-d", f"{seconds}s", url]
        # wrk stops itself after -d; the timeout only guards against a hang.
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if out.returncode != 0:
        raise BenchFailed(f"wrk exited with {out.returncode}: {out.stderr.strip()}")
    return parse(out.stdout), out.stdout
