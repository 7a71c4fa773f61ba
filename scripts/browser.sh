#!/usr/bin/env bash
# Makes sure the browser the UI tests drive is there: Debian's chromium
# (Playwright drives it; no browser is downloaded from elsewhere) and a
# small CJK font so that the Chinese UI in the screenshots is legible.
# Installs them with apt when missing (as root, or through sudo).
set -euo pipefail
if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi 'wenquanyi\|noto sans cjk'; then
	exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
	sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
$sudo apt-get install -y chromium fonts-wqy-microhei
