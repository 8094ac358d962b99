#!/usr/bin/env bash
# bench/run.sh BUILD - `make bench`: every benchmark, one table from one run,
# our figures beside their baselines with the ratios. A private redis-server
# is started unless REDIS_URL is set. Not part of `make test`.
#   BENCH_STEPS   lifecycle steps per scenario (default 20000)
#   BENCH_SKIP    words of sections to skip: queue bullmq backfill latency
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
steps=${BENCH_STEPS:-20000}
skip=" ${BENCH_SKIP:-} "

if [ -z "${REDIS_URL:-}" ]; then
    tmp=$(mktemp -d /tmp/stepq-bench.XXXXXX)
    trap '"$here/tests/redis.sh" stop "$tmp/redis"; rm -rf "$tmp"' EXIT
    "$here/tests/redis.sh" start "$tmp/redis" >/dev/null
    # shellcheck disable=SC1091
    . "$tmp/redis/env"
    export REDIS_URL REDIS_PORT
fi
echo "# stepq bench, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(redis-server --version | cut -d' ' -f3)"
echo

if [[ "$skip" != *" queue "* ]]; then
    echo "## queue lifecycle ($steps steps per row)"
    "$build/bench/bench_queue" "$REDIS_URL" "$steps" | tee "${tmp:-/tmp}/queue.txt"
    echo
fi

if [[ "$skip" != *" bullmq "* ]] && command -v node >/dev/null && [ -n "${REDIS_PORT:-}" ]; then
    echo "## against BullMQ (add + process with concurrency 50, overlapped; $steps jobs)"
    (cd "$here/bench/bullmq" && { [ -d node_modules/bullmq ] || npm install --silent --no-audit --no-fund >/dev/null 2>&1; })
    if [ -d "$here/bench/bullmq/node_modules/bullmq" ]; then
        bull=$(node "$here/bench/bullmq/bench.mjs" "$REDIS_PORT" "$steps" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs_per_s"]))')
        ours=$(awk '/stepq, phase job/ && $4 == 8 {print $5}' "${tmp:-/tmp}/queue.txt")
        printf '%-34s %12s\n' "BullMQ end-to-end jobs/s" "$bull"
        printf '%-34s %12s %9.2fx  (target >= 1.40)\n' "stepq 8 clients, phase job" "$ours" \
            "$(python3 -c "print($ours/$bull)")"
    else
        echo "skipped: npm could not install bullmq"
    fi
    echo
fi

for extra in "$here"/bench/run-*.sh; do
    [ -x "$extra" ] && "$extra" "$build"
done
