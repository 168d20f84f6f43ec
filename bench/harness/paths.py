"""Where bench/ keeps things: its apps, its venv, the Django copy, the results.

Only paths and the one address every server binds; no behaviour.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
APPS_DIR = BENCH_DIR / "apps"
HARNESS_DIR = BENCH_DIR / "harness"
# The example Django site, copied and set up by setup.sh (20 entries, static
# files collected with hashed names, mysite/settings_whitenoise.py added).
DJANGO_DIR = BENCH_DIR / ".django_site"
RESULTS_DIR = BENCH_DIR / "results"
VENV_BIN = BENCH_DIR / ".venv" / "bin"
# Files the static scenarios serve, written afresh by each run.
STATIC_DIR = Path(tempfile.gettempdir()) / "tandem-bench-static"

HOST = "127.0.0.1"  # every server binds here and all traffic targets only here


def venv(exe: str) -> str:
    return str(VENV_BIN / exe)
