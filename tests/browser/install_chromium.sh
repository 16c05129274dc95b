#!/usr/bin/env bash
# Install the headless Chromium that tests/jobs/test_ui_browser.py drives (Debian
# package chromium, /usr/bin/chromium). Idempotent: returns at once when it is there.
set -euo pipefail

CHROMIUM=${BASIS_CHROMIUM:-/usr/bin/chromium}

if [[ -x $CHROMIUM ]]; then
  exit 0
fi

if [[ $(id -u) != 0 ]]; then
  echo "install_chromium.sh: $CHROMIUM is missing; run me as root to apt-get install chromium" >&2
  exit 1
fi

echo "install_chromium.sh: $CHROMIUM is missing; installing the Debian package chromium"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
[[ -x $CHROMIUM ]] || { echo "install_chromium.sh: chromium installed but $CHROMIUM is missing" >&2; exit 1; }
