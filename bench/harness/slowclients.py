"""The slow-clients scenario: hello-world throughput and new-client latency
while attackers hold connections open.

For one server (started once, with the hello app): measure wrk and a
new-client probe without attack, then under each attacker in turn:

- `slowloris`: bench/slowloris.py --mode headers (1,000 connections, one
  header line every 10 s, the head never finished);
- `slow-body`: bench/slowloris.py --mode body (head complete with
  Content-Length, body trickled a byte every 10 s);
- `slowhttptest`: Debian's slowhttptest 1.8.2 in slowloris mode (-H) with the
  same count and interval. It busy-loops once its probe is answered (about
  0.7 of a core): its CPU is reported, since it is taken from the server.

The probe opens a fresh connection, sends GET / and times the arrival of the
whole response head; it runs with the attack on and wrk stopped. Starting
the server and the wrk runs are run.py's and wrk.py's; this module owns the
attackers, the probe and the tables.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from harness import BenchFailed, memory
from harness.paths import BENCH_DIR, HOST
from harness.wrk import NO_REQUEST, WrkResult

ATTACKS = ("slowloris", "slow-body", "slowhttptest")
DESCRIPTION = (
    "One round per server, all with the hello-world app. wrk measures without attack, then"
    " under each attacker, each attack right after a no-attack run it is compared with"
    " (`--slow-pairs N` repeats each pair N times; the ratio is the median of the pairs'):"
    " `slowloris` (bench/slowloris.py: each connection sends one header"
    " line every 10 s and never ends the head), `slow-body` (the same client: a complete POST"
    " head with Content-Length, then one body byte every 10 s) and Debian's `slowhttptest`"
    " 1.8.2 in slowloris mode with the same count and interval. slowhttptest busy-loops once"
    " its probe is answered (about 0.7 of a core), which penalises exactly the servers that"
    " survive: its CPU during the wrk run is given, and the quiet slowloris column is the"
    " fair one. Its verdict ('service available', from its own probe) is the last of its"
    " status reports, which come every 5 s, with the second of the attack it was made at."
    " A cell of 0 means wrk completed no request at all."
)
ATTACK_CONNECTIONS = 1000
ATTACK_INTERVAL = 10  # seconds between an attacker's sends on one connection
OPEN_TIMEOUT = 10.0  # seconds for an attacker to open its connections
PROBE_TIMEOUT = 2.0  # seconds a new client waits before the probe counts it lost
PROBE_GIVE_UP = 2  # lost probes in a row before the rest are skipped


@dataclass
class Probe:
    """New-client latency: times in ms of the probes answered, and how many were lost."""

    times_ms: list[float] = field(default_factory=list)
    lost: int = 0

    def median_text(self) -> str:
        total = len(self.times_ms) + self.lost
        if total == 0:
            return "–"
        if self.lost * 2 >= total:
            return f"> {PROBE_TIMEOUT:.0f} s ({self.lost} of {total} lost)"
        # lost probes are slower than every answered one
        med = statistics.median(self.times_ms + [float("inf")] * self.lost)
        text = f"{med * 1000:.0f} µs" if med < 1 else f"{med:.1f} ms"
        return text + (f" ({self.lost} of {total} lost)" if self.lost else "")


@dataclass
class Phase:
    """One condition (no attack, or one attacker): wrk's figures and the probe's."""

    name: str
    wrk: WrkResult | None = None
    probe: Probe = field(default_factory=Probe)
    held: int = 0  # connections the attacker held when wrk started
    attacker_cores: float = 0.0  # attacker's CPU during the wrk run, in cores
    verdict: str = ""  # slowhttptest's own "service available" at the end of the phase
    pss_kb: int = 0  # the server's summed PSS right after the wrk run
    error: str = ""
    base_rps: float = 0.0  # req/s of the no-attack run just before this phase


@dataclass
class SlowResult:
    server: str
    phases: list[Phase] = field(default_factory=list)
    error: str = ""


def probe(port: int, count: int) -> Probe:
    """`count` fresh connections, one after another: time to the whole response head.

    A probe not answered 200 within PROBE_TIMEOUT is lost."""
    result = Probe()
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
    lost_in_row = 0
    for _ in range(count):
        t0 = time.perf_counter()
        try:
            with socket.create_connection((HOST, port), timeout=PROBE_TIMEOUT) as s:
                s.sendall(request)
                data = b""
                while b"\r\n\r\n" not in data:
                    left = PROBE_TIMEOUT - (time.perf_counter() - t0)
                    if left <= 0:
                        raise TimeoutError
                    s.settimeout(left)
                    chunk = s.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed before the response head")
                    data += chunk
            if data.split(b" ", 2)[1:2] != [b"200"]:
                raise ConnectionError("answered, but not 200")
            result.times_ms.append((time.perf_counter() - t0) * 1000)
            lost_in_row = 0
        except OSError:
            result.lost += 1
            lost_in_row += 1
            if lost_in_row >= PROBE_GIVE_UP:
                break
        time.sleep(0.02)
    return result


def established_to(port: int) -> int:
    """Client-side TCP connections to HOST:port in ESTABLISHED state (/proc/net/tcp).

    Counted by the kernel, so it is the same for every attacker, and a
    connection the server has not accepted yet (still in its backlog) counts.
    """
    want = f"{socket.inet_aton(HOST)[::-1].hex().upper()}:{port:04X}"
    n = 0
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) > 3 and fields[2] == want and fields[3] == "01":
                    n += 1
    except (OSError, StopIteration):
        pass
    return n


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# slowhttptest prints its status every 5 s: "slow HTTP test status on 5th second:"
_STATUS_SECOND = re.compile(r"slow HTTP test status on (\d+)")


class Attacker:
    """An attacking process in a session of its own; its output read by a thread."""

    def __init__(self, attack: str, port: int, seconds: int, python: str):
        if attack == "slowhttptest":
            # stdbuf: its status screen, through a pipe, would be block-buffered
            argv = ["stdbuf", "-oL", "slowhttptest", "-H", "-c", str(ATTACK_CONNECTIONS)]
            argv += ["-i", str(ATTACK_INTERVAL), "-r", "5000", "-x", "24", "-p", "3"]
            argv += ["-l", str(seconds), "-u", f"http://{HOST}:{port}/"]
        else:
            mode = "headers" if attack == "slowloris" else "body"
            argv = [python, str(BENCH_DIR / "slowloris.py"), "--host", HOST, "--port", str(port)]
            argv += ["--connections", str(ATTACK_CONNECTIONS), "--mode", mode]
            argv += ["--interval", str(ATTACK_INTERVAL), "--duration", str(seconds)]
        self.attack = attack
        self.lines: list[str] = []
        self.held = 0  # connections to the server established when last counted
        self.verdict = ""  # slowhttptest's last "service available: YES/NO", and when
        self._second = "?"
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = _ANSI.sub("", line).strip()  # slowhttptest colours its screen
            self.lines.append(line)
            m = _STATUS_SECOND.match(line)
            if m:
                self._second = m.group(1)
            key, _, value = line.partition(":")
            if key.strip() == "service available":
                self.verdict = f"{value.strip()} at {self._second} s"

    def wait_open(self, port: int, want: int, timeout: float) -> None:
        """Until `want` connections to port are established, or their count has
        stopped growing for a second at 95% of it, or timeout."""
        deadline = time.monotonic() + timeout
        grew_at, last = time.monotonic(), -1
        while time.monotonic() < deadline:
            self.held = established_to(port)
            if self.held >= want:
                return
            if self.held > last:
                grew_at, last = time.monotonic(), self.held
            elif self.held >= 0.95 * want and time.monotonic() - grew_at > 1.0:
                return
            if self.proc.poll() is not None:
                tail = "\n".join(self.lines[-8:])
                raise BenchFailed(f"{self.attack} exited with {self.proc.returncode}:\n{tail}")
            time.sleep(0.1)

    def cpu_ticks(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            return 0

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


def under_attack(attack: str, port: int, pgid: int, measure, probes: int) -> Phase:
    """Start `attack`, wait for its connections, run measure() (wrk), probe, stop it."""
    phase = Phase(attack)
    # bounded: the attacker stops itself after this even if we never signal it
    attacker = Attacker(attack, port, int(OPEN_TIMEOUT + 120), sys.executable)
    try:
        attacker.wait_open(port, ATTACK_CONNECTIONS, OPEN_TIMEOUT)
        phase.held = attacker.held
        t0, ticks0 = time.monotonic(), attacker.cpu_ticks()
        try:
            phase.wrk = measure()
        except BenchFailed as e:
            phase.error = str(e).splitlines()[0]
        elapsed = max(time.monotonic() - t0, 1e-9)
        phase.attacker_cores = (attacker.cpu_ticks() - ticks0) / os.sysconf("SC_CLK_TCK") / elapsed
        phase.pss_kb = memory.group_memory(pgid)[1]
        phase.probe = probe(port, probes)
        phase.verdict = attacker.verdict
    finally:
        attacker.stop()
    return phase


def _rps(p: Phase) -> str:
    if p.wrk is None:
        if p.error.startswith(NO_REQUEST):
            return "0"
        return f"failed: {p.error}" if p.error else "–"
    x = p.wrk
    errs = f", {x.errors:,} errors" if x.errors else ""
    return f"{x.rps:,.0f}{errs}"


def tables(results: list[SlowResult]) -> list[str]:
    """The scenario's markdown: throughput and ratios, then new-client latency."""
    head = ["server", "req/s, no attack"]
    for a in ATTACKS:
        head += [f"req/s, {a}", "× no attack"]
    head += ["slowhttptest CPU", "slowhttptest's last verdict"]
    out = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in results:
        if r.error:
            out.append(f"| {r.server} | failed: {r.error.splitlines()[0]}" + " |" * (len(head) - 1))
            continue
        by = {p.name: p for p in r.phases}
        bases = [p.base_rps for p in r.phases if p.base_rps]
        row = [
            r.server,
            f"{statistics.median(bases):,.0f}"
            if bases
            else _rps(by["none"])
            if "none" in by
            else "–",
        ]
        for a in ATTACKS:
            pairs = [p for p in r.phases if p.name == a]
            if not pairs:
                row += ["–", "–"]
                continue
            measured = [p for p in pairs if p.wrk and p.base_rps]
            if measured:
                rps = statistics.median(p.wrk.rps for p in measured)
                ratio = statistics.median(p.wrk.rps / p.base_rps for p in measured)
                row += [f"{rps:,.0f}", f"{ratio:.2f}"]
            else:
                row += [_rps(pairs[-1]), "–"]
        sh = by.get("slowhttptest")
        row.append(f"{sh.attacker_cores:.2f} cores" if sh else "–")
        row.append(f"service available: {sh.verdict}" if sh and sh.verdict else "–")
        out.append("| " + " | ".join(row) + " |")
    out += [
        "",
        "New-client latency (median time to the response head on a fresh connection,"
        f" {PROBE_TIMEOUT:.0f} s timeout; wrk stopped, the attack still on) and the"
        " connections each attacker held when wrk started:",
        "",
    ]
    head = ["server", "no attack"] + [f"{a} (held)" for a in ATTACKS]
    out += ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in results:
        if r.error:
            continue
        by = {p.name: p for p in r.phases}
        row = [r.server, by["none"].probe.median_text() if "none" in by else "–"]
        for a in ATTACKS:
            p = by.get(a)
            row.append(f"{p.probe.median_text()} ({p.held:,})" if p else "–")
        out.append("| " + " | ".join(row) + " |")
    out += [
        "",
        "The server's memory (summed PSS of its process group, MB) right after each"
        " wrk run, with the attacker's connections still open:",
        "",
    ]
    head = ["server", "no attack", *ATTACKS]
    out += ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in results:
        if r.error:
            continue
        by = {p.name: p for p in r.phases}
        cells = [by[n].pss_kb if n in by else 0 for n in ("none", *ATTACKS)]
        row = [r.server] + [f"{kb / 1024:.0f}" if kb else "–" for kb in cells]
        out.append("| " + " | ".join(row) + " |")
    return out


def phase_line(p: Phase) -> str:
    """A phase as a progress line on stderr."""
    return f"{_rps(p)} req/s, held {p.held:,}, new client {p.probe.median_text()}" + (
        f", attacker CPU {p.attacker_cores:.2f}" if p.name != "none" else ""
    )
