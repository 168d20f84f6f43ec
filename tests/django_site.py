"""The example Django site (examples/django_site), prepared in a temp copy.

Each test session copies the site's code to a temp directory and runs its
`demo_setup` command there (migrate, demo admin user, collectstatic), so the
database, the collected static files and the uploads are private to the run
and the checkout is never written to. The copy is laid out like the
checkout, so the commands in the README and docs run in it unchanged.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TANDEM_BIN

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "django_site"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "tandem-test-password"
APP = "mysite.wsgi"
STATIC_ARGS = ("--static", "/static/=staticfiles", "--static", "/media/=media")

_LEFTOVERS = ("db.sqlite3", "staticfiles", "media", "__pycache__", "*.pyc")


def have_django():
    try:
        import django  # noqa: F401
    except ImportError:
        return False
    return True


def tandem_has_static():
    """Whether this build of tandem has the `--static` route."""
    out = subprocess.run([TANDEM_BIN, "--help"], capture_output=True, text=True, timeout=30)
    return "--static" in out.stdout


def prepare(base: Path) -> Path:
    """Copies the site under `base` and sets it up; returns the copy's directory."""
    if not have_django():
        pytest.fail("Django is not installed: pip install -r requirements-dev.txt")
    site = base / "django_site"
    shutil.copytree(EXAMPLE, site, ignore=shutil.ignore_patterns(*_LEFTOVERS))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DJANGO_") and not k.startswith("DEMO_ADMIN")
    }
    r = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "demo_setup",
            "--username",
            ADMIN_USER,
            "--password",
            ADMIN_PASSWORD,
        ],
        cwd=site,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, f"demo_setup failed:\n{r.stdout}\n{r.stderr}"
    assert f"password {ADMIN_PASSWORD!r}" in r.stdout, r.stdout
    return site


def server_args():
    """tandem's arguments for the site: its static routes, when tandem has them.

    Without `--static` the site still starts (its pages work), and every test
    that needs /static/ or /media/ fails with a message saying why.
    """
    return STATIC_ARGS if tandem_has_static() else ()


def require_static():
    if not tandem_has_static():
        pytest.fail("this tandem has no --static route yet: /static/ and /media/ are not served")
