#!/usr/bin/env bash
# Renders a `vendorgate audit report` page in headless Chromium and saves a screenshot, to see the
# charts as a reviewer does. Installs Debian's chromium when missing.
#
#   scripts/report-screenshot.sh REPORT.html OUT.png
set -euo pipefail
html=$(realpath "$1"); png=$2
if ! command -v chromium >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] && SUDO="" || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size=1000,1500 --hide-scrollbars \
  --screenshot="$png" "file://$html" 2>/dev/null
echo "screenshot: $png"
