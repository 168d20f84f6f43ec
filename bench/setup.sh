#!/usr/bin/env bash
# Installs what bench/run.py compares, into places of its own:
#   - wrk, nginx, slowhttptest, h2load and openssl from Debian's packages
#     (apt-get, only if missing);
#   - bench/.venv with gunicorn, granian, uWSGI (built from source with the C
#     compiler and the python3 headers), Django, WhiteNoise, matplotlib (for
#     the chart) and tandem built from this checkout;
#   - bench/.django_site: a copy of examples/django_site, set up (database
#     with 20 entries, static files collected) for the Django scenarios.
# Idempotent and quick when nothing changed. tandem is rebuilt when the hash of
# its sources (src/, python/, Cargo.*, pyproject.toml) differs from the stamp
# left by the last build, so a stale build is never benchmarked.
#
# Usage: bash bench/setup.sh [--reinstall]
#   --reinstall   rebuild tandem and reinstall the Python packages regardless.
# Environment: PYTHON (default python3) picks the interpreter for the venv.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
VENV="$BENCH_DIR/.venv"
STAMP="$VENV/.tandem-src-hash"
PYTHON="${PYTHON:-python3}"
PY_PACKAGES=(gunicorn granian uwsgi maturin matplotlib whitenoise -r "$ROOT/examples/django_site/requirements.txt")

reinstall=0
for arg in "$@"; do
    case "$arg" in
        --reinstall) reinstall=1 ;;
        -h|--help) sed -n '2,10p' "$0" | cut -c3-; exit 0 ;;
        *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { echo "bench/setup: $*" >&2; }

# --- system packages --------------------------------------------------------
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v slowhttptest >/dev/null 2>&1 || missing+=(slowhttptest)
# uWSGI has no wheel: pip compiles it, which needs a C compiler and Python's headers.
command -v cc >/dev/null 2>&1 || missing+=(gcc)
python_h="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h"
[ -f "$python_h" ] || missing+=("$("$PYTHON" -c 'import sys; print("python%d.%d-dev" % sys.version_info[:2])')")
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)  # bench/h2.py
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)  # bench/instructions.py
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # bench/h2.py's certificate
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]} with apt-get"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- virtualenv -------------------------------------------------------------
want_py="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
if [ -x "$VENV/bin/python" ]; then
    have_py="$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || true)"
    if [ "$have_py" != "$want_py" ]; then
        say "bench/.venv has Python ${have_py:-?}, $PYTHON is $want_py: recreating it"
        rm -rf "$VENV"
    fi
fi
if [ ! -x "$VENV/bin/python" ]; then
    say "creating bench/.venv with $PYTHON ($want_py)"
    "$PYTHON" -m venv "$VENV"
    reinstall=1
fi

pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

have_all=1
for exe in gunicorn granian uwsgi maturin django-admin; do
    [ -x "$VENV/bin/$exe" ] || have_all=0
done
"$VENV/bin/python" -c 'import matplotlib' 2>/dev/null || have_all=0
if [ "$reinstall" -eq 1 ] || [ "$have_all" -eq 0 ]; then
    say "installing ${PY_PACKAGES[*]} into bench/.venv"
    pip install --upgrade "${PY_PACKAGES[@]}"
fi

# --- tandem from this checkout ----------------------------------------------
src_hash() {
    (
        cd "$ROOT"
        find src python Cargo.toml Cargo.lock pyproject.toml -type f \
            ! -name '*.so' ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
            | LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -d' ' -f1
}

hash_now="$(src_hash)"
hash_built="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$reinstall" -eq 1 ] || [ ! -x "$VENV/bin/tandem" ] || [ "$hash_now" != "$hash_built" ]; then
    say "building tandem from $ROOT (maturin, release; a minute or two on 2 cores)"
    rm -f "$STAMP"
    # maturin comes from the venv (installed above), so no isolated build env
    # is downloaded each time (its backend runs `maturin` from PATH); cargo
    # reuses $ROOT/target between builds.
    PATH="$VENV/bin:$PATH" pip install --no-build-isolation --force-reinstall --no-deps "$ROOT"
    # The sources may have moved on while cargo ran; stamp what was hashed
    # before the build only if it is still what is on disk.
    if [ "$(src_hash)" = "$hash_now" ]; then
        echo "$hash_now" > "$STAMP"
    else
        say "warning: sources changed during the build; it will be rebuilt next time"
    fi
else
    say "tandem is up to date with the sources (hash ${hash_now:0:12})"
fi

# --- the example Django site -------------------------------------------------
# Laid out anew each time (a few seconds), so it always matches the example.
SITE="$BENCH_DIR/.django_site"
"$VENV/bin/python" -c 'import django, whitenoise' 2>/dev/null || pip install "${PY_PACKAGES[@]}"
rm -rf "$SITE"
cp -r "$ROOT/examples/django_site" "$SITE"
rm -rf "$SITE/db.sqlite3" "$SITE/staticfiles" "$SITE/media"
cp "$BENCH_DIR/apps/settings_whitenoise.py" "$SITE/mysite/settings_whitenoise.py"
(
    cd "$SITE"
    env -u DJANGO_SETTINGS_MODULE -u DJANGO_DB_PATH -u DJANGO_STATIC_ROOT -u DJANGO_MEDIA_ROOT \
        "$VENV/bin/python" manage.py demo_setup >/dev/null
    env -u DJANGO_SETTINGS_MODULE -u DJANGO_DB_PATH "$VENV/bin/python" manage.py shell -v 0 -c '
from guestbook.models import Entry
Entry.objects.bulk_create(
    Entry(name=f"visitor {i}", message=f"Message number {i}, " + "lorem ipsum " * 8)
    for i in range(20)
)'
)
say "Django site ready in bench/.django_site"

"$VENV/bin/tandem" --version >/dev/null
say "ready: $("$VENV/bin/tandem" --version 2>&1 | head -1), gunicorn $("$VENV/bin/gunicorn" --version 2>&1 | awk '{print $NF}' | tr -d ')'), $("$VENV/bin/granian" --version 2>&1 | head -1), uWSGI $("$VENV/bin/uwsgi" --version 2>&1 | head -1)"
