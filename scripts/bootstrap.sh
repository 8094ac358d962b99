#!/usr/bin/env bash
# scripts/bootstrap.sh - installs what stepq needs to build, test and run on
# Debian 12, with apt-get, only when something is missing. Run as root (or
# with sudo available). Idempotent and quiet when all is there.
set -euo pipefail

pkgs=(build-essential clang libclang-rt-14-dev cmake pkg-config libhiredis-dev libmicrohttpd-dev
      libjansson-dev uuid-dev libzstd-dev libxxhash-dev nettle-dev redis-server redis-tools curl python3
      valgrind jq time)
[ "${STEPQ_BOOTSTRAP_EXTRA:-}" ] && read -r -a extra <<<"$STEPQ_BOOTSTRAP_EXTRA" && pkgs+=("${extra[@]}")

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "bootstrap: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
