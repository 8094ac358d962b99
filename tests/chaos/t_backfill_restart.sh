#!/usr/bin/env bash
# tests/chaos/t_backfill_restart.sh STEPQ - regression: a backfill killed
# (-9) halfway, then redis-server killed and restarted (AOF reload), then the
# backfill resumed: every old key must get its new twin. A SCAN cursor is a
# position in one server's hash table, whose seed is new at every start, so
# resuming from the old cursor skipped keys (found by chaos.sh). Runs a
# redis-server of its own, since it restarts it.
set -uo pipefail
S=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
unset ENABLE_DUAL_WRITE_STEPS PRIMARY_KEY_PATTERN STEPQ_NAMESPACE STEPQ_RULES
tmp=$(mktemp -d /tmp/stepq-bfrestart.XXXXXX)
rdir=$tmp/redis
aof="--appendonly yes --appendfsync always"
trap '"$root/tests/redis.sh" stop "$rdir" >/dev/null 2>&1; rm -rf "$tmp"' EXIT
REDIS_EXTRA="$aof" "$root/tests/redis.sh" start "$rdir" || exit 1
# shellcheck disable=SC1091
. "$rdir/env"
export REDIS_URL="unix://$REDIS_SOCK"
rcli() { redis-cli -s "$REDIS_SOCK" "$@"; }
passed=0 failed=0
expect() {
    local what=$1
    shift
    if "$@"; then passed=$((passed + 1)); echo "ok   $what"; else failed=$((failed + 1)); echo "FAIL $what"; fi
}

n=2000
# Records of the old system, written straight into job:* (no queue needed).
for i in $(seq "$n"); do echo "HSET job:legacy$i status completed n $i"; done | rcli >/dev/null
expect "$n old keys" [ "$(rcli DBSIZE)" -ge "$n" ]
"$S" migrate phase dual-write --reason test >/dev/null
"$S" migrate backfill --batch 10 --rate 1500 >"$tmp/bf1.log" 2>&1 &
bf=$!
for _ in $(seq 100); do
    [ "$(rcli HGET stepq:backfill keys_done)" -ge $((n / 3)) ] 2>/dev/null && break
    sleep 0.05
done
kill -9 "$bf"
wait "$bf" 2>/dev/null
done1=$(rcli HGET stepq:backfill keys_done)
expect "the backfill was killed halfway ($done1 of $n)" [ "$done1" -gt 0 ] && [ "$done1" -lt "$n" ]

pid=$(cat "$rdir/redis.pid")
kill -9 "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break; sleep 0.05; done
rm -f "$rdir/redis.pid"
REDIS_EXTRA="$aof --port $REDIS_PORT" "$root/tests/redis.sh" start "$rdir" || exit 1
expect "the checkpoint survived the restart" [ "$(rcli HGET stepq:backfill state)" = running ]

"$S" migrate backfill --batch 200 --json >"$tmp/bf2.log" 2>&1
expect "the backfill resumes and ends (exit 0)" [ $? -eq 0 ]
expect "it says it resumed" grep -q '"resumed":true' "$tmp/bf2.log"
missing=$(for i in $(seq "$n"); do echo "EXISTS step:legacy$i"; done | rcli | grep -c '^0$')
expect "every old key has its new twin ($missing missing)" [ "$missing" -eq 0 ]
"$S" migrate verify >"$tmp/verify.log" 2>&1
expect "verify is clean" [ $? -eq 0 ]
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
