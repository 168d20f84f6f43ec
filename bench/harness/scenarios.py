"""The scenarios wrk measures (SCENARIOS): what is requested, from which app.

Adding a scenario is adding an entry. How each server is started for a
scenario is in servers.py; the slow-client scenario, which is not a plain wrk
run, is in slowclients.py.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.paths import APPS_DIR, DJANGO_DIR, STATIC_DIR


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str  # one line, the report's heading
    app: str  # MODULE:CALLABLE, importable from cwd
    expect_body: bytes  # a correct answer is this, or contains it (checked before measuring)
    path: str | Callable[[], str] = "/"  # the URL path wrk requests (or what computes it)
    cwd: Path = APPS_DIR
    kind: str = "app"  # "app": a WSGI app; "static": files under STATIC_DIR served at /static/
    connections: int | None = None  # wrk connections, if not --connections
    static_size: int = 0  # for "static": the size of the file at `path`
    # Django: static files from the server's static route where it has one
    # (tandem, nginx), else from Django through WhiteNoise.
    django: bool = False
    # One request in `slow_every` goes to `slow_path` instead (wrk Lua script).
    slow_path: str = ""
    slow_every: int = 0
    # Measure the same app called in a loop in one Python process (ceiling.py).
    ceiling: bool = False
    note: str = ""  # a paragraph under the report's heading

    def url_path(self) -> str:
        return self.path() if callable(self.path) else self.path


def hashed_static(name: str) -> Callable[[], str]:
    """The URL of collected static file `name`, with its hash (read from the manifest)."""

    def path() -> str:
        manifest = DJANGO_DIR / "staticfiles" / "staticfiles.json"
        try:
            paths = json.loads(manifest.read_text())["paths"]
        except OSError:
            sys.exit(f"bench: {manifest} missing: run `bash bench/setup.sh` first")
        return "/static/" + paths[name]

    return path


def static_content(size: int) -> bytes:
    """Deterministic CSS-looking bytes of exactly `size` bytes."""
    line = b".c%08d { color: #123456; margin: 0 auto; }\n"
    text = b"".join(line % i for i in range(size // len(line % 0) + 1))
    return text[:size]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            name="hello",
            description="hello-world WSGI app, 14-byte text/plain body",
            app="hello:app",
            expect_body=b"Hello, world!\n",
            ceiling=True,
        ),
        Scenario(
            name="django-page",
            description="the example Django site's list page: 20 rows from SQLite through a"
            " template (DEBUG off)",
            app="mysite.wsgi:application",
            expect_body=b'<li class="entry">',
            cwd=DJANGO_DIR,
            django=True,
            ceiling=True,
        ),
        Scenario(
            name="django-static",
            description="a hashed static file of the same site (admin/css/base.css, ~22 KB)",
            app="mysite.wsgi:application",
            expect_body=b"--header-bg",
            path=hashed_static("admin/css/base.css"),
            cwd=DJANGO_DIR,
            django=True,
            ceiling=True,
        ),
        Scenario(
            name="mixed",
            description="the hello-world app, but 1 request in 10 takes 200 ms (`/slow` sleeps)",
            note="Tail latency of the fast 90% behind the slow 10%. wrk keeps every"
            " connection busy, so a server whose workers run one request at a time is capped"
            " at about 50 req/s per worker (10 requests per 200 ms) and queues the rest;"
            " one that runs requests on threads (granian by default) is not.",
            app="hello:app",
            expect_body=b"Hello, world!\n",
            slow_path="/slow",
            slow_every=10,
        ),
        Scenario(
            name="static-10k",
            description="a 10 KB CSS file from disk (64 connections)",
            app="hello:app",
            expect_body=static_content(10 * 1024),
            path="/static/app.css",
            kind="static",
            connections=64,
            static_size=10 * 1024,
        ),
        Scenario(
            name="static-5m",
            description="a 5 MB file from disk (8 connections)",
            app="hello:app",
            expect_body=static_content(5 * 1024 * 1024),
            path="/static/big.css",
            kind="static",
            connections=8,
            static_size=5 * 1024 * 1024,
        ),
    ]
}


def prepare_static() -> None:
    """Write the static scenarios' files into STATIC_DIR."""
    STATIC_DIR.mkdir(exist_ok=True)
    for sc in SCENARIOS.values():
        if sc.kind == "static":
            name = sc.url_path().rpartition("/")[2]
            (STATIC_DIR / name).write_bytes(static_content(sc.static_size))
    STATIC_DIR.chmod(0o755)
