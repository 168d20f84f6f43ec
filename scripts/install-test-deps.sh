#!/usr/bin/env bash
# Installs the system packages the test suite needs beyond Python and Rust:
# Debian's chromium and chromium-driver, for tests/test_browser.py; tmux,
# which drives `tandem top` in tests/test_control.py; and systemd's
# systemd-socket-activate, for tests/test_systemd.py; iproute2's `ip`, which
# builds the network namespaces of tests/test_proxy_hosts.py. Does nothing when all
# are already there. (The Python side, Django, selenium and
# prometheus_client, comes from requirements-dev.txt through `make test`.)
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && command -v tmux >/dev/null \
    && command -v systemd-socket-activate >/dev/null && command -v ip >/dev/null; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-test-deps: installing chromium, chromium-driver, tmux, systemd and iproute2 with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver tmux systemd iproute2 >/dev/null
/usr/bin/chromium --version >&2
