#!/usr/bin/env bash
# Installs Debian's nginx (used by the TLS-proxy recipe's test, TestFirstHour/recipe_TLS_proxy in
# firsthour_tls_test.go) if it is missing. Only the binary is used: the test
# runs its own nginx, with its own config, on a unix socket. Idempotent; meant
# to run as root (CI and developer machines run as root).
set -euo pipefail

if [ -x /usr/sbin/nginx ]; then
	echo "install-nginx: /usr/sbin/nginx already present ($(/usr/sbin/nginx -v 2>&1 || echo 'version unknown'))"
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx; } >"$log" 2>&1; then
	cat "$log" >&2
	echo "install-nginx: apt-get failed" >&2
	exit 1
fi
# The package may start a system nginx on port 80; the test does not need it.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
echo "install-nginx: installed $(/usr/sbin/nginx -v 2>&1 || echo nginx)"
