#!/usr/bin/env bash
# Installs the Debian packages the tests need beyond Go modules, when missing:
#   chromium           cmd/server/browser_test.go (the chat page in a real browser)
#   python3-websockets an independent WebSocket client (/usr/bin/python3)
#   systemd            systemd-socket-activate, for the socket-activation test
#   nginx              the TLS-proxy recipe's test (TestFirstHour/recipe_TLS_proxy),
#                      and server bench's nginx reference row (bench/nginx_test.go);
#                      only the binary: each runs its own nginx
#   wrk                server bench --loadgen wrk (bench/wrk_test.go)
# Idempotent; one apt-get for whatever is missing. Meant to run as root (CI and
# developer machines run as root).
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
/usr/bin/python3 -c 'import websockets' >/dev/null 2>&1 || missing+=(python3-websockets)
command -v systemd-socket-activate >/dev/null 2>&1 || missing+=(systemd)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)

if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all present"
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
	cat "$log" >&2
	echo "install-deps: apt-get install ${missing[*]} failed" >&2
	exit 1
fi
# nginx's package may start a system nginx on port 80; the tests do not use it.
if [[ " ${missing[*]} " == *" nginx "* ]] && command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now nginx >/dev/null 2>&1 || true
fi
echo "install-deps: installed ${missing[*]}"
