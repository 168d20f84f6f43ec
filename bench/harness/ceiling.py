"""The in-process ceiling: one WSGI app called in a loop inside one Python process.

No server, no socket: a minimal environ for GET PATH, call the app, consume
and close the body. Calls per CPU-second is what one core running Python can
do for this app; times the worker count, it is what no WSGI server with that
many single-threaded workers can beat (unless it answers without Python, as
a static route does).

Standalone (no harness imports), run in the app's directory:
    python harness/ceiling.py MODULE:CALLABLE PATH SECONDS
prints one JSON line: {"calls": N, "cpu_s": S, "wall_s": W, "status": "200 OK"}.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
import time


def load(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "application")


def base_environ(path: str) -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    spec, path, seconds = argv[0], argv[1], float(argv[2])
    sys.path.insert(0, os.getcwd())
    app = load(spec)
    base = base_environ(path)
    status = []

    def start_response(s, headers, exc_info=None):
        status.append(s)
        return lambda data: None

    def call() -> None:
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(b"")
        body = app(environ, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    warm_until = time.perf_counter() + min(1.0, seconds / 4)
    while time.perf_counter() < warm_until:
        call()
    if not status or not status[-1].startswith("200"):
        print(f"ceiling: {spec} answered {status[-1:]} for {path}", file=sys.stderr)
        return 1
    calls = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    end = wall0 + seconds
    while True:
        for _ in range(50):
            call()
        calls += 50
        if time.perf_counter() >= end:
            break
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(json.dumps({"calls": calls, "cpu_s": cpu, "wall_s": wall, "status": status[-1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
