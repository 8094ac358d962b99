#!/usr/bin/env bash
# bench/run-migrate.sh BUILD - the migration benchmarks (bench/README.md):
# for each size in BENCH_SIZES (default "100000 1000000"), the seed layout is
# loaded by bench/load_legacy and migrated by each contender on a fresh copy
# of the same data (FLUSHALL + reload): the raw limit (bench/raw_copy), the
# seed's own script (bench/seed_migrate) and `stepq migrate backfill`; then
# verify, backup and cleanup run on the backfilled data. Then, at the first
# size, a latency probe (bench/probe) runs idle, beside an unthrottled
# backfill and beside a backfill with --max-latency-ms. One table at the end.
#   BENCH_SIZES          step counts (default "100000 1000000")
#   BENCH_SEED_SECONDS   time limit of the seed's script at sizes above
#                        100000 (default 60; 0 = none): its rate is per key
#   BENCH_MAX_LATENCY_MS the throttled backfill's --max-latency-ms (default 1)
#   BENCH_THROTTLED_ARGS more options for the throttled backfill (e.g. --batch 10)
#   BENCH_SKIP           "backfill" skips the throughput part, "latency" the probe
#   BENCH_MIGRATE_ROUNDS rounds of the raw limit, backfill and verify at sizes
#                        up to 100000, each on a fresh load, taking turns; the
#                        best of each is shown (default 2; larger sizes: 1)
# Uses its own private redis-server (tests/redis.sh), never REDIS_URL's.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
sizes=${BENCH_SIZES:-"100000 1000000"}
seed_limit=${BENCH_SEED_SECONDS:-60}
maxlat=${BENCH_MAX_LATENCY_MS:-1}
mrounds=${BENCH_MIGRATE_ROUNDS:-2}
skip=" ${BENCH_SKIP:-} "
B=$build/bench

tmp=$(mktemp -d /tmp/stepq-bench-migrate.XXXXXX)
probe_pid=
cleanup() {
    [ -n "$probe_pid" ] && kill "$probe_pid" 2>/dev/null || true
    "$here/tests/redis.sh" stop "$tmp/redis" || true
    rm -rf "$tmp"
}
trap cleanup EXIT
"$here/tests/redis.sh" start "$tmp/redis" >/dev/null
url=$(sed -n 's/^REDIS_URL=//p' "$tmp/redis/env")
sock=$(sed -n 's/^REDIS_SOCK=//p' "$tmp/redis/env")
cli() { redis-cli -s "$sock" "$@"; }
stepq() { "$build/stepq" -u "$url" "$@"; }
. "$(dirname "$0")/lib.sh"
rows=$tmp/rows

# fresh N: an empty server loaded with N steps; prints the old key count.
fresh() { fresh_at "$url" "$1"; }
rate() { python3 -c "print(round($1 / max($2, 1e-9)))"; }
row() { printf '%-40s %12s %9s %8s  %s\n' "$@" >>"$rows"; }
mib() { python3 -c "print('%.1f' % ($1 / 1024))"; }

# best NAME KEYS: keeps the best rate of NAME's last run in NAME.best and
# the largest peak RSS of its runs in NAME.maxrss (the memory target is on
# the worst run). Prints nothing.
best() {
    local name=$1 r m
    r=$(rate "$2" "$(cat "$tmp/$name.wall")")
    if [ ! -f "$tmp/$name.best" ] || [ "$r" -gt "$(cat "$tmp/$name.best")" ]; then
        echo "$r" >"$tmp/$name.best"
    fi
    m=$(cat "$tmp/$name.rss")
    if [ ! -f "$tmp/$name.maxrss" ] || [ "$m" -gt "$(cat "$tmp/$name.maxrss")" ]; then
        echo "$m" >"$tmp/$name.maxrss"
    fi
}

# One round of the contenders whose ratios are targets, each on a fresh
# load: the raw limit, then stepq's backfill and verify (the phase moves a
# real rollout makes before them).
round() {
    local n=$1 keys=$2
    fresh "$n" >/dev/null
    timed raw "$B/raw_copy" "$url"
    local r; r=$(field keys_per_s "$tmp/raw.out")
    if [ ! -f "$tmp/raw.best" ] || [ "$r" -gt "$(cat "$tmp/raw.best")" ]; then
        echo "$r" >"$tmp/raw.best"
    fi
    fresh "$n" >/dev/null
    stepq migrate phase dual-write >/dev/null
    timed backfill "$build/stepq" -u "$url" migrate backfill --json
    best backfill "$keys"
    timed verify "$build/stepq" -u "$url" migrate verify --json
    best verify "$keys"
}

# The rest of the walk on the last round's data, forced where only the
# timing matters (the preconditions are exercised by the tests).
stepq_rest() {
    local n=$1 keys=$2
    stepq migrate phase dual-read >/dev/null
    stepq migrate phase step-primary --force --reason bench >/dev/null
    stepq migrate phase step --force --reason bench >/dev/null
    timed backup "$build/stepq" -u "$url" migrate backup --out "$tmp/old.bak" --quiet
    row "stepq backup (old side), $n steps" "$(rate "$keys" "$(cat "$tmp/backup.wall")")" "" \
        "$(mib "$(cat "$tmp/backup.rss")")" "$(du -m "$tmp/old.bak" | cut -f1) MiB file"
    timed cleanup "$build/stepq" -u "$url" migrate cleanup --backup "$tmp/old.bak" --quiet
    row "stepq cleanup, $n steps" "$(rate "$keys" "$(cat "$tmp/cleanup.wall")")" "" \
        "$(mib "$(cat "$tmp/cleanup.rss")")" "old keys left: $(cli --scan --pattern 'job:*' | wc -l)"
    rm -f "$tmp/old.bak"
}

throughput() {
    local n=$1 keys rounds=1
    [ "$n" -le 100000 ] && rounds=$mrounds
    rm -f "$tmp"/*.best "$tmp"/*.maxrss
    keys=$(fresh "$n")
    local lim=0
    [ "$n" -gt 100000 ] && lim=$seed_limit
    timed seed "$B/seed_migrate" "$url" "$lim"
    local seed; seed=$(field keys_per_s "$tmp/seed.out")
    for _ in $(seq "$rounds"); do
        round "$n" "$keys"
    done
    local raw bf vf
    raw=$(cat "$tmp/raw.best") bf=$(cat "$tmp/backfill.best") vf=$(cat "$tmp/verify.best")
    local of=""
    [ "$rounds" -gt 1 ] && of=", best of $rounds"
    row "raw SCAN+COPY limit, $n steps$of" "$raw" "" "" "$keys keys"
    row "seed's script (KEYS, 3 RTT/key), $n steps" "$seed" "" "" \
        "$(field done "$tmp/seed.out") of $(field keys "$tmp/seed.out") keys$([ "$lim" -gt 0 ] && echo " in its first ${lim}s")"
    row "stepq backfill, $n steps$of" "$bf" "$(python3 -c "print('%.2fx' % ($bf / $raw))")" \
        "$(mib "$(cat "$tmp/backfill.maxrss")")" "vs raw limit (target >= 0.70x); RSS MiB"
    row "" "" "$(python3 -c "print('%.1fx' % ($bf / $seed))")" "" \
        "vs the seed's script (target >= 20x)"
    row "stepq verify, $n steps$of" "$vf" "$(python3 -c "print('%.2fx' % ($vf / $bf))")" \
        "$(mib "$(cat "$tmp/verify.maxrss")")" "vs backfill (target >= 0.50x)"
    stepq_rest "$n" "$keys"
}

# probe_during NAME CMD...: the probe's percentiles while CMD runs.
probe_during() {
    local name=$1
    shift
    "$B/probe" "$url" 1000 600 >"$tmp/probe.$name" &
    probe_pid=$!
    sleep 0.5
    "$@" >/dev/null 2>&1
    kill -TERM "$probe_pid"
    wait "$probe_pid" || true
    probe_pid=
}

latency() {
    local n=$1
    fresh "$n" >/dev/null
    "$B/probe" "$url" 1000 3 >"$tmp/probe.idle"
    stepq migrate phase dual-write >/dev/null
    local t0 t1
    t0=$(date +%s.%N)
    probe_during full stepq migrate backfill
    t1=$(date +%s.%N)
    local full_s; full_s=$(python3 -c "print('%.1f' % ($t1 - $t0 - 0.5))")
    fresh "$n" >/dev/null
    stepq migrate phase dual-write >/dev/null
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    probe_during throttled stepq migrate backfill --max-latency-ms "$maxlat" ${BENCH_THROTTLED_ARGS:-}
    t1=$(date +%s.%N)
    local thr_s; thr_s=$(python3 -c "print('%.1f' % ($t1 - $t0 - 0.5))")
    local idle99; idle99=$(field p99_ms "$tmp/probe.idle")
    for p in idle full throttled; do
        local label=$p extra=""
        case $p in
        idle) label="no backfill" ;;
        full) label="backfill unthrottled (${full_s}s)" ;;
        throttled)
            label="backfill --max-latency-ms $maxlat (${thr_s}s)"
            extra="p99 vs idle p99 (target <= 2x)"
            ;;
        esac
        printf '%-44s %9s %9s %9s  %s\n' "$label" "$(field p50_ms "$tmp/probe.$p")" \
            "$(field p99_ms "$tmp/probe.$p")" \
            "$(python3 -c "print('%.2fx' % ($(field p99_ms "$tmp/probe.$p") / $idle99))")" \
            "$extra" >>"$tmp/lat"
    done
}

echo "## migration: backfill, verify, cleanup (sizes: $sizes)"
: >"$rows"
if [[ "$skip" != *" backfill "* ]]; then
    for n in $sizes; do
        throughput "$n"
    done
    printf '%-40s %12s %9s %8s  %s\n' "contender" "keys/s" "ratio" "peak RSS" "against"
    cat "$rows"
fi
if [[ "$skip" != *" latency "* ]]; then
    n=${sizes%% *}
    : >"$tmp/lat"
    latency "$n"
    echo
    echo "## probe latency during a backfill ($n steps; 1000 HGET/HSET round trips/s)"
    printf '%-44s %9s %9s %9s  %s\n' "condition" "p50 ms" "p99 ms" "p99/idle" ""
    cat "$tmp/lat"
fi
echo
