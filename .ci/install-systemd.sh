#!/usr/bin/env bash
# Installs Debian's systemd package for systemd-socket-activate (used by
# cmd/server/systemd_test.go) if it is missing. Only the tool is used: no
# service manager needs to run. Idempotent; meant to run as root.
set -euo pipefail

if command -v systemd-socket-activate >/dev/null 2>&1; then
	echo "install-systemd: systemd-socket-activate already present"
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd; } >"$log" 2>&1; then
	cat "$log" >&2
	echo "install-systemd: apt-get failed" >&2
	exit 1
fi
echo "install-systemd: installed $(command -v systemd-socket-activate)"
