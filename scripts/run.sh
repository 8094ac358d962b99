#!/usr/bin/env bash
# scripts/run.sh STEPQ - the main job (`make run`). With REDIS_URL unset, a
# private redis-server is started in a temp dir and removed on exit.
set -euo pipefail
STEPQ=${1:-build/stepq}
shift || true
here=$(cd "$(dirname "$0")/.." && pwd)

if [ -z "${REDIS_URL:-}" ]; then
    tmp=$(mktemp -d /tmp/stepq-run.XXXXXX)
    trap '"$here/tests/redis.sh" stop "$tmp/redis"; rm -rf "$tmp"' EXIT
    "$here/tests/redis.sh" start "$tmp/redis"
    # shellcheck disable=SC1091
    . "$tmp/redis/env"
    export REDIS_URL
    echo "== private redis-server at $REDIS_URL"
fi
# Not exec: the EXIT trap must stop the private server.
"$here/scripts/mainjob.sh" "$STEPQ" "$@"
