#!/usr/bin/env bash
# bench/walk_stats.sh BUILD [STEPS] - where each walk spends Redis's time:
# on a private redis-server loaded with STEPS steps (default 100000) in the
# seed layout, runs backfill, verify, backfill --repair, the rollback out of
# step, and cleanup in turn (loopback TCP), and prints after each the
# commands that took more than 50 ms in all, from INFO commandstats (calls,
# usec, usec a call; the scripts' own calls are counted in theirs and under
# their names too), and Redis's CPU (INFO cpu) and the client's (GNU time).
# Not part of `make bench` (bench/README.md, "Where the walks' time goes").
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/stepq-walk-stats.XXXXXX)
trap '"$here/tests/redis.sh" stop "$tmp/redis" || true; rm -rf "$tmp"' EXIT
"$here/tests/redis.sh" start "$tmp/redis" >/dev/null
port=$(sed -n 's/^REDIS_PORT=//p' "$tmp/redis/env")
u=redis://127.0.0.1:$port/0
cli() { redis-cli -p "$port" "$@"; }
cpu() { cli INFO cpu | awk -F: '/used_cpu_(sys|user):/ {s += $2} END {printf "%.2f", s}'; }
"$build/bench/load_legacy" "$u" "${2:-100000}" >/dev/null
s=("$build/stepq" -u "$u")
# run NAME ARGS...: one walk, then its figures.
run() {
    local name=$1 c0
    shift
    cli CONFIG RESETSTAT >/dev/null
    c0=$(cpu)
    /usr/bin/time -f '%e %U %S' -o "$tmp/time" "${s[@]}" "$@" >/dev/null
    read -r wall user sys <"$tmp/time"
    echo "== $name: wall ${wall} s, redis $(python3 -c "print(round($(cpu) - $c0, 2))") s, client $(python3 -c "print(round($user + $sys, 2))") s"
    cli INFO commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat/ && $5 > 50000 {
        printf "  %-24s calls %8d usec %9d per call %8.2f\n", substr($1, 9), $3, $5, $7 }'
}
"${s[@]}" migrate phase dual-write >/dev/null
run backfill migrate backfill --json
run verify migrate verify --json
run repair migrate backfill --repair --json
for p in dual-read step-primary step; do "${s[@]}" migrate phase $p --force --reason stats >/dev/null; done
run rollback migrate rollback --json
sleep 1 # OBJECT IDLETIME counts whole seconds: the rollback's writes come before the move
"${s[@]}" migrate phase step --force --reason stats >/dev/null
sleep 1
"${s[@]}" migrate backup --out "$tmp/old.bak" --quiet >/dev/null 2>&1
run cleanup migrate cleanup --backup "$tmp/old.bak" --quiet
