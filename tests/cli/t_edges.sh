#!/usr/bin/env bash
# t_edges.sh - the edges of the migration walk (issue 10), walked as an
# operator would, following stepq's own messages: nothing runs twice, no
# collection with steps its twin lacks is deleted, every advice is allowed.
set -u
. "$(dirname "$0")/lib.sh"
tmp=$(mktemp -d) && trap 'rm -rf "$tmp" "$tmpout"' EXIT
S=$STEPQ
export STEPQ_OPERATOR=t_edges

# walk_to PHASE: the real walk (preconditions met) from job to PHASE.
walk_to() {
    $S migrate phase dual-write >/dev/null || return 1
    [ "$1" = dual-write ] && return 0
    $S migrate backfill >/dev/null && $S migrate verify >/dev/null &&
        $S migrate phase dual-read >/dev/null || return 1
    [ "$1" = dual-read ] && return 0
    $S migrate verify >/dev/null && $S migrate phase step-primary >/dev/null || return 1
    [ "$1" = step-primary ] && return 0
    $S migrate backup --out "$tmp/switch.bk" >/dev/null && $S migrate phase step >/dev/null
}

# Finding 1: a step claimed in step-primary and completed in step. The old
# side keeps it in jobs:active and worker:W:jobs (frozen at the switch).
rcli FLUSHDB >/dev/null
expect_ok "walk to step-primary" 'walk_to step-primary'
x=$($S submit --type t)
tok=$($S claim --worker W1 | jq -r .token)
expect_ok "back up and switch to step" '$S migrate backup --out $tmp/s.bk && $S migrate phase step'
expect_ok "complete X in step" '$S complete $x --token $tok'
expect_ok "final backup" '$S migrate backup --out $tmp/final.bk'
expect_ok "cleanup deletes every old key, stale collections too" \
    '$S migrate cleanup --backup $tmp/final.bk; test "$(rcli --scan --pattern "job*" | wc -l)" = 0; test "$(rcli --scan --pattern "worker:*:jobs" | wc -l)" = 0'
expect_code 4 "backfill is refused in step, even forced (the old side is stale there)" \
    '$S migrate backfill --force; $S migrate backfill'
# A stale index entry: the reaper trusts the record, not the collection.
rcli SADD steps:active "$x" >/dev/null
rcli SADD worker:W1:steps "$x" >/dev/null
expect_ok "a reap does not bring the completed X back" \
    '$S reap --timeout-ms 0; test "$($S get $x | jq -r .status)" = completed; test "$(rcli ZCARD steps:pending)" = 0'

# Finding 8: the old application (not stepq) writes job:L and jobs:pending L
# in step-primary; after the switch cleanup must not drop jobs:pending, and
# must name L.
rcli FLUSHDB >/dev/null
expect_ok "walk to step-primary" 'walk_to step-primary'
y=$($S submit --type t)
rcli HSET job:L type legacy status pending priority 3 >/dev/null
rcli ZADD jobs:pending 3 L >/dev/null
rcli HSET job:L:progress percent 5 >/dev/null
expect_ok "switch" '$S migrate backup --out $tmp/s2.bk && $S migrate phase step && $S migrate backup --out $tmp/f2.bk'
expect_code 1 "cleanup keeps jobs:pending, names L, deletes the rest" \
    '$S migrate cleanup --backup $tmp/f2.bk >$tmp/out 2>&1; rc=$?; cat $tmp/out; grep -q "jobs:pending" $tmp/out && grep -q "job:L" $tmp/out && test "$(rcli EXISTS jobs:pending job:L job:$y)" = 2 || exit 9; exit $rc'

# Following its advice: --adopt moves L to the new side, a worker can claim
# it, and no old key is left. A second cleanup run (which read the kept keys)
# is not taken for a reader.
expect_ok "cleanup --adopt, as advised, takes L over and deletes the rest" \
    '$S migrate cleanup --backup $tmp/f2.bk --adopt; test "$(rcli --scan --pattern "job*" | wc -l)" = 0'
expect_ok "L is claimable on the new side" \
    'test "$($S get L | jq -r .status)" = pending; test "$(rcli HGET step:L:progress percent)" = 5; $S claim --worker W2 --count 5 | jq -r '.[].id' | grep -qx L'

# Finding 11: a second backup in 'step' (its DUMPs touch every old key) does
# not make cleanup see a reader that does not exist.
rcli FLUSHDB >/dev/null
for i in 1 2 3; do $S submit --type t >/dev/null; done
expect_ok "walk to step" 'walk_to step'
expect_ok "two final backups, past the switch's slack, then cleanup --dry-run with the second" \
    'sleep 1.6; $S migrate backup --out $tmp/a.bk && sleep 1.1 && $S migrate backup --out $tmp/b.bk && sleep 1.1 && $S migrate cleanup --dry-run --backup $tmp/b.bk'
expect_ok "and cleanup with the first of them" '$S migrate cleanup --backup $tmp/a.bk'

# Found by the randomized walk: stepq's own verify in 'step' reads old keys,
# and the backup after it recorded that as a reader; cleanup refused forever.
rcli FLUSHDB >/dev/null
for i in 1 2; do $S submit --type t >/dev/null; done
expect_ok "walk to step" 'walk_to step'
expect_ok "a verify in step, then the final backup and cleanup" \
    'sleep 3; $S migrate verify; sleep 2.5; $S migrate backup --out $tmp/v.bk && $S migrate cleanup --backup $tmp/v.bk'

# Finding 2: rollback to job, then forward again. X was claimed in
# dual-write and completed after the rollback: step:X and steps:active keep
# the state of before. Repair is the way out; plain backfill is not enough.
rcli FLUSHDB >/dev/null
expect_ok "dual-write, submit and claim X" '$S migrate phase dual-write'
x=$($S submit --type t)
tok=$($S claim --worker W3 | jq -r .token)
expect_ok "roll back to job, complete X there, forward to dual-write" \
    '$S migrate rollback && $S complete $x --token $tok && $S migrate phase dual-write'
expect_ok "status says the new keys are untrusted" '$S migrate status --json | jq -e ".untrusted_since > 0"'
expect_code 4 "backfill and verify do not open dual-read: the repair is named" \
    '$S migrate backfill >/dev/null; $S migrate verify; $S migrate phase dual-read >$tmp/dr 2>&1; rc=$?; cat $tmp/dr; grep -q -- "--repair" $tmp/dr || exit 9; exit $rc'
expect_code 4 "repair is refused outside dual-write" \
    '$S migrate rollback >/dev/null; $S migrate backfill --repair; rc=$?; $S migrate phase dual-write >/dev/null; exit $rc'
expect_ok "repair, then verify is clean and the sides agree" \
    '$S migrate backfill --repair && $S migrate verify && test "$(rcli HGET step:$x status)" = completed && test "$(rcli SCARD steps:active)" = 0'
expect_ok "the untrusted mark is gone and dual-read opens" \
    '$S migrate status --json | jq -e ".untrusted_since == null" && $S migrate phase dual-read'
expect_ok "a reap does not bring X back" \
    '$S reap --timeout-ms 0; test "$($S get $x | jq -r .status)" = completed; test "$(rcli ZCARD steps:pending)" = 0'

# Finding 4: an idle worker in dual-read is not a fallback read, not even
# when the old queue holds a step it cannot run.
$S submit --type gpu --require gpu >/dev/null
expect_ok "idle claims in dual-read count no fallback reads" \
    'for i in 1 2 3; do $S claim --worker W4 || true; done; test "$(rcli HGET stepq:stats fallback_reads)" = ""'

# Finding 9: a rollback out of step would delete a live step only the old
# keys hold (the old application wrote it after the switch): it names it and
# refuses; its advice (cleanup --adopt) takes it over, and the rollback then
# rewrites the old keys from the new ones, L included.
rcli FLUSHDB >/dev/null
expect_ok "walk to step" 'walk_to step'
rcli HSET job:L type legacy status pending priority 3 >/dev/null
rcli ZADD jobs:pending 3 L >/dev/null
expect_code 4 "rollback names L and refuses, changing nothing" \
    '$S migrate rollback >$tmp/rb 2>&1; rc=$?; cat $tmp/rb; grep -q "'"'"'job:L'"'"'" $tmp/rb && grep -q "cleanup --adopt" $tmp/rb && test "$(rcli HGET stepq:phase phase)" = step && test "$(rcli EXISTS job:L)" = 1 || exit 9; exit $rc'
expect_ok "the advised cleanup --adopt, then the rollback, keep L on both sides" \
    '$S migrate backup --out $tmp/f9.bk >/dev/null && $S migrate cleanup --backup $tmp/f9.bk --adopt >/dev/null && $S migrate rollback && test "$(rcli ZSCORE steps:pending L)" = 3 && test "$(rcli ZSCORE jobs:pending L)" = 3 && test "$(rcli HGET job:L status)" = pending'

# Invariant 5 (the model's MOVEOK): a process pinned to 'job' writes no new
# key, so the move to dual-read is refused while one lives; the advice
# (restart it without the pin) opens the move.
rcli FLUSHDB >/dev/null
expect_ok "walk to dual-write, backfill and verify" \
    '$S migrate phase dual-write && $S migrate backfill && $S migrate verify'
ENABLE_DUAL_WRITE_STEPS=false PRIMARY_KEY_PATTERN=job $S worker --id PJ -- true >/dev/null 2>&1 &
pj=$!
for i in $(seq 50); do [ "$(rcli HLEN stepq:procs)" -ge 1 ] && break; sleep 0.1; done
expect_code 4 "dual-read refused while a process is pinned to job, naming it and the fix" \
    '$S migrate phase dual-read >$tmp/pin 2>&1; rc=$?; cat $tmp/pin; grep -q "pinned to phase .job." $tmp/pin && grep -q "ENABLE_DUAL_WRITE_STEPS" $tmp/pin || exit 9; exit $rc'
kill -TERM $pj; wait $pj
expect_ok "with the pinned process gone, the move is allowed" '$S migrate phase dual-read'

# step -> job is refused even forced; its advice (roll back one phase at a
# time with 'stepq migrate rollback') is allowed at each phase and reaches
# job, with a step written in step on both sides at the end.
rcli FLUSHDB >/dev/null
expect_ok "walk to step, a step submitted there" 'walk_to step && $S submit --type t >$tmp/sj'
expect_code 4 "phase job --force is refused in step and names the way back" \
    '$S migrate phase job --force >$tmp/j 2>&1; rc=$?; cat $tmp/j; grep -q "roll back one phase at a time with .stepq migrate rollback." $tmp/j && test "$(rcli HGET stepq:phase phase)" = step || exit 9; exit $rc'
expect_ok "the advised rollbacks, one phase at a time, reach job" \
    'for p in step-primary dual-read dual-write job; do $S migrate rollback >/dev/null && test "$(rcli HGET stepq:phase phase)" = $p || exit 1; done'
expect_ok "the step submitted in step is on the old side, pending" \
    'test "$(rcli HGET job:$(cat $tmp/sj) status)" = pending && test -n "$(rcli ZSCORE jobs:pending $(cat $tmp/sj))"'

finish
