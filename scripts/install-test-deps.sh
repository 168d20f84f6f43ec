#!/usr/bin/env bash
# Installs the system packages the test suite needs beyond Python and Rust:
# Debian's chromium and chromium-driver, for tests/test_browser.py. Does
# nothing when both are already there. (The Python side, Django and
# selenium, comes from requirements-dev.txt through `make test`.)
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-test-deps: installing chromium and chromium-driver with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
/usr/bin/chromium --version >&2
