#!/usr/bin/env bash
# scripts/bootstrap.sh - installs what stepq needs to build, test and run on
# Debian 12, with apt-get, only when something is missing. Run as root (or
# with sudo available). Idempotent and quiet when all is there.
set -euo pipefail

pkgs=(build-essential clang libclang-rt-14-dev cmake pkg-config libhiredis-dev libmicrohttpd-dev
      libjansson-dev uuid-dev libzstd-dev libxxhash-dev nettle-dev libjemalloc-dev redis-server redis-tools curl python3
      valgrind jq time chromium nodejs systemd)
# npm: Debian's package, unless a node from elsewhere brought its own.
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
[ "${STEPQ_BOOTSTRAP_EXTRA:-}" ] && read -r -a extra <<<"$STEPQ_BOOTSTRAP_EXTRA" && pkgs+=("${extra[@]}")

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The browser tests' node packages (tests/browser): playwright-core, pinned
# by the committed package-lock.json; it drives Debian's chromium and never
# downloads a browser. Installed again only when the lock file changed.
browser=$(cd "$(dirname "$0")/../tests/browser" && pwd)
if ! cmp -s "$browser/package-lock.json" "$browser/node_modules/.package-lock.json.installed"; then
    echo "bootstrap: npm ci in tests/browser" >&2
    (cd "$browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$browser/package-lock.json" "$browser/node_modules/.package-lock.json.installed"
fi
