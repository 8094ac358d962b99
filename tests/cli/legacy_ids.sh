#!/usr/bin/env bash
# legacy_ids.sh - steps the old system wrote with ids stepq never makes
# (issue 10, finding 10), walked as an operator would: longer than 199
# bytes, holding a NUL, holding ':' ('a:b'), and a progress hash of such an
# id. Before, backfill skipped them with exit 0, verify was clean, and claim
# in 'step' dropped them from the pending queue as orphans. An old-looking
# key that no rule maps is named and fails backfill and verify, with what to
# do. Registered by name in tests/CMakeLists.txt (database 120).
set -u
. "$(dirname "$0")/lib.sh"
tmp=$(mktemp -d) && trap 'rm -rf "$tmp" "$tmpout"' EXIT
S=$STEPQ
export STEPQ_OPERATOR=legacy_ids
long=$(printf 'L%.0s' $(seq 250))

# Legacy steps, pending, as the old system wrote them (a NUL needs Lua).
seed() {
    rcli FLUSHDB >/dev/null
    rcli HSET "job:$long" status pending priority 5 type legacy >/dev/null
    rcli HSET job:a:b status pending priority 4 type legacy >/dev/null
    rcli HSET job:a:b:progress percent 30 >/dev/null
    rcli EVAL "redis.call('HSET', 'job:nu' .. string.char(0) .. 'l', 'status', 'pending',
        'priority', '3', 'type', 'legacy')
        redis.call('ZADD', 'jobs:pending', 3, 'nu' .. string.char(0) .. 'l')" 0 >/dev/null
    rcli ZADD jobs:pending 5 "$long" 4 a:b >/dev/null
}

walk_to_step() {
    $S migrate phase dual-write >/dev/null && $S migrate backfill >/dev/null &&
        $S migrate verify >/dev/null && $S migrate phase dual-read >/dev/null &&
        $S migrate verify >/dev/null && $S migrate phase step-primary >/dev/null &&
        $S migrate backup --out "$tmp/s.bk" >/dev/null && $S migrate phase step >/dev/null
}

seed
expect_ok "the whole walk to step, each command exit 0" 'walk_to_step'
expect_ok "every legacy key has its twin" \
    'test "$(rcli EXISTS "step:$long" step:a:b step:a:b:progress)" = 3; test "$(rcli EVAL "return redis.call(\"EXISTS\", \"step:nu\" .. string.char(0) .. \"l\")" 0)" = 1'
expect_ok "claim in step takes all three, drops none as an orphan" \
    '$S claim --worker W1 --count 5 >$tmp/c; test "$(jq length $tmp/c)" = 3; grep -q "\"a:b\"" $tmp/c; grep -q "$long" $tmp/c; test "$(rcli HGET stepq:stats orphans_dropped)" = ""'
expect_ok "a:b is completed through the CLI by its id" \
    'tok=$(jq -r ".[] | select(.id == \"a:b\") | .token" $tmp/c); $S complete a:b --token "$tok" && test "$($S get a:b | jq -r .status)" = completed'
expect_ok "the long id is read through the CLI" 'test "$($S get "$long" | jq -r .status)" = active'
expect_ok "the final backup and cleanup leave no old key" \
    '$S migrate backup --out $tmp/f.bk && $S migrate cleanup --backup $tmp/f.bk && test "$(rcli --scan --pattern "job*" | wc -l)" = 0'
expect_code 2 "an id the key map reads as another key is refused, saying why" \
    '$S get a:progress >$tmp/o 2>&1; rc=$?; cat $tmp/o; grep -q "rule .progress. of another id" $tmp/o || exit 9; exit $rc'

# An old-looking key no rule maps: named by backfill and verify, both exit 1.
seed
rcli HSET job: status pending >/dev/null
rcli EVAL "redis.call('SADD', 'worker:' .. string.char(0) .. ':jobs', 'x')" 0 >/dev/null
rcli SADD worker::jobs x >/dev/null
expect_ok "dual-write" '$S migrate phase dual-write'
expect_code 1 "backfill names each unmapped key, escaped, and says what to do" \
    '$S migrate backfill >$tmp/b 2>&1; rc=$?; cat $tmp/b; grep -q "job:.*no rule of the key map maps it" $tmp/b && grep -q "worker::jobs" $tmp/b && grep -q "run .stepq migrate backfill. again" $tmp/b || exit 9; exit $rc'
expect_ok "the others were copied all the same" 'test "$(rcli EXISTS step:a:b "step:$long")" = 2'
expect_code 1 "verify is not clean: it names the unmapped keys" \
    '$S migrate verify >$tmp/v 2>&1; rc=$?; cat $tmp/v; grep -q "worker::jobs" $tmp/v && grep -q "unmapped" $tmp/v || exit 9; exit $rc'
expect_code 4 "dual-read stays closed" '$S migrate phase dual-read'
expect_ok "once they are gone the walk goes on" \
    'rcli DEL job: worker::jobs >/dev/null && $S migrate backfill >/dev/null && $S migrate verify >/dev/null && $S migrate phase dual-read'

finish
