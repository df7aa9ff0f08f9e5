#!/usr/bin/env bash
# Installs Debian's chromium (used by cmd/server/browser_test.go) if it is missing.
# Idempotent; meant to run as root (CI and developer machines run as root).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
	echo "install-chromium: /usr/bin/chromium already present ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
	cat "$log" >&2
	echo "install-chromium: apt-get failed" >&2
	exit 1
fi
echo "install-chromium: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
