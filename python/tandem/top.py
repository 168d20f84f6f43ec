"""``tandem top``: a live view of a running tandem, refreshed every second.

Shows each worker (pid, state, current request and for how long, age,
resident memory, requests served), the queue depth, and requests per
second and the 99th percentile latency over the last minute. The rate and
percentile come from the master's cumulative counters: this view keeps a
minute of samples and compares the newest with the oldest, so the p99 is
the upper bound of a histogram bucket ("<= 25 ms"). ``q`` quits.
"""

import argparse
import collections
import curses
import sys
import time

from tandem.ctl import Client, CtlError, find_socket

WINDOW = 60.0


class Window:
    """A minute of (time, requests answered, cumulative latency buckets)."""

    def __init__(self):
        self.samples = collections.deque()

    def add(self, now, total, buckets):
        self.samples.append((now, total, buckets))
        while len(self.samples) > 2 and now - self.samples[1][0] >= WINDOW:
            self.samples.popleft()

    def rate(self):
        if len(self.samples) < 2:
            return None
        (t0, n0, _), (t1, n1, _) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None

    def p99(self):
        """The smallest bucket bound holding 99% of the window's requests."""
        if len(self.samples) < 2:
            return None
        first, last = self.samples[0][2], self.samples[-1][2]
        deltas = [(le, b - a) for (le, b), (_, a) in zip(last, first)]
        total = deltas[-1][1]
        if total <= 0:
            return None
        for le, n in deltas:
            if n >= 0.99 * total:
                return le
        return "+Inf"


def describe_latency(le):
    if le is None:
        return "-"
    if le == "+Inf":
        return "> 10 s"
    ms = float(le) * 1000
    return f"<= {ms:g} ms" if ms < 1000 else f"<= {ms / 1000:g} s"


def render(status, window):
    rate = window.rate()
    rate_text = "-" if rate is None else f"{rate:.1f}"
    reloading = " (reloading)" if status["reloading"] else ""
    head = [
        f"tandem {status['version']}  pid {status['pid']}  '{status['app']}'"
        f"  up {status['uptime_secs']:.0f}s  generation {status['generation']}{reloading}",
        f"req/s (1 min): {rate_text}   p99 (1 min): {describe_latency(window.p99())}"
        f"   queue: {status['queue_depth']}   in flight: {status['in_flight']}"
        f"   workers: {len(status['workers'])}/{status['target_workers']}",
        "",
        f"{'PID':>8} {'STATE':<9} {'SERVED':>8} {'RSS MiB':>8} {'AGE':>7}  CURRENT REQUEST",
    ]
    rows = []
    for w in status["workers"]:
        cur = w["current"]
        current = f"{cur['request']}  ({cur['secs']:.1f}s)" if cur else ""
        rows.append(
            f"{w['pid']:>8} {w['state']:<9} {w['served']:>8} {w['rss_bytes'] / (1 << 20):>8.1f} "
            f"{w['age_secs']:>6.0f}s  {current}"
        )
    return head + rows + ["", "q: quit"]


def _loop(screen, client):
    curses.curs_set(0)
    screen.timeout(100)
    window = Window()
    next_poll = 0.0
    while True:
        now = time.monotonic()
        if now >= next_poll:
            next_poll = now + 1.0
            status = client.call("status")
            buckets = [(le, n) for le, n in status["latency_buckets"]]
            window.add(now, status["requests_total"], buckets)
            screen.erase()
            height, width = screen.getmaxyx()
            for y, line in enumerate(render(status, window)[: height - 1]):
                screen.addnstr(y, 0, line, width - 1)
            screen.refresh()
        key = screen.getch()
        if key in (ord("q"), ord("Q")):
            return


def main(argv):
    p = argparse.ArgumentParser(
        prog="tandem top", description="Live view of a running tandem (q quits)."
    )
    p.add_argument(
        "-s", "--socket", help="control socket path (default: the only running tandem's)"
    )
    p.add_argument("--pid", metavar="FILE", help="find the tandem whose --pid file this is")
    args = p.parse_args(argv)
    try:
        path = find_socket(args.socket, args.pid)
        with Client(path) as client:
            curses.wrapper(_loop, client)
    except CtlError as e:
        print(f"tandem top: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
