#!/usr/bin/env bash
# screenshots.sh BUILD [OUT] - `make screenshots`: the console of each phase
# as PNG files under OUT (docs/img), taken on a private redis-server.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-build}" && pwd)
out=${2:-$here/../../docs/img}
dir=$(mktemp -d)
trap '"$here/../redis.sh" stop "$dir"' EXIT
"$here/../redis.sh" start "$dir"
export STEPQ=$build/stepq REDIS_SOCK=$dir/redis.sock STEPQ_DB=0 STEPQ_TEST_PRIVATE=1
export STEPQ_TEST_REDIS=unix://$dir/redis.sock
node "$here/screenshots.mjs" "$out"
