#!/usr/bin/env bash
# Installs Debian's python3-websockets (the conformance suite's second,
# independent WebSocket client: cmd/server/conformance_http_test.go) if it
# is missing. Idempotent; meant to run as root, as install-chromium.sh.
set -euo pipefail

if /usr/bin/python3 -c 'import websockets' 2>/dev/null; then
	echo "install-python-websockets: present ($(/usr/bin/python3 -c 'import websockets; print(websockets.__version__)'))"
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-websockets; } >"$log" 2>&1; then
	cat "$log" >&2
	echo "install-python-websockets: apt-get failed" >&2
	exit 1
fi
echo "install-python-websockets: installed python3-websockets"
