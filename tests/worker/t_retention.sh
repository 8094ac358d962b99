#!/usr/bin/env bash
# Retention that retains (issue 10, finding 5): --retention and
# STEPQ_RETENTION set the TTL of ended steps' records, the ended sets get
# none, and `stepq reap` prunes ids whose record expired and holds the
# --keep-completed cap, so `list completed` never shows an id that `get`
# cannot find. A worker holds its cap too.
. "$(dirname "$0")/lib.sh"

done_one() { # done_one [GLOBAL OPTS...]: submits, claims and completes one step
    local id tok
    id=$($S submit)
    tok=$($S claim --worker w97 | jq -r .token)
    $S "$@" complete "$id" --token "$tok" --result ok
    echo "$id"
}

a=$(done_one --retention 2s)
ttl=$(rcli PTTL "job:$a")
expect "--retention 2s is the record's TTL" test "$ttl" -gt 0 -a "$ttl" -le 2000
b=$(STEPQ_RETENTION=1h done_one)
ttl=$(rcli PTTL "job:$b")
expect "STEPQ_RETENTION=1h too" test "$ttl" -gt 2000 -a "$ttl" -le 3600000
c=$(done_one)
ttl=$(rcli PTTL "job:$c")
expect "the default is 7 days" test "$ttl" -gt 3600000 -a "$ttl" -le 604800000
expect "the completed set has no TTL" eq "$(rcli PTTL jobs:completed)" -1

expect "a bad retention is a usage error" eq "$(STEPQ_RETENTION=7x $S get "$a" 2>"$TMP/err"; echo $?)" 2
expect "which says what to use" grep -q "invalid STEPQ_RETENTION '7x'; use a duration" "$TMP/err"
expect "--retention 0 is refused too" eq "$($S --retention 0 get "$a" 2>/dev/null; echo $?)" 2

gone() { [ "$(rcli EXISTS "job:$a")" = 0 ]; }
expect "the short-lived record expires" wait_for 5 gone
expect "its id is still in the set" eq "$(rcli SISMEMBER jobs:completed "$a")" 1
out=$($S reap --timeout-ms 60000)
expect "reap prunes it" eq "$(echo "$out" | jq .pruned)" 1
listed_gettable() {
    local id
    for id in $($S list completed); do
        $S get "$id" >/dev/null || { echo "  listed but not found: $id" >&2; return 1; }
    done
}
expect "every id listed can be read" listed_gettable
expect "the others stay" eq "$($S list completed | sort | tr '\n' ' ')" "$(printf '%s\n' "$b" "$c" | sort | tr '\n' ' ')"

# The cap: a worker with --keep-completed 2 holds the set at 2 while it runs
# 5 more steps.
for _ in 1 2 3 4 5; do $S submit >/dev/null; done
start_worker w97w --keep-completed 2 -- true
drained() { [ "$(rcli ZCARD jobs:pending)" = 0 ] && [ "$(rcli SCARD jobs:active)" = 0 ]; }
expect "the worker runs the steps" wait_for 10 drained
capped() { [ "$(rcli SCARD jobs:completed)" = 2 ]; }
expect "its reaper holds the cap" wait_for 10 capped
expect "and the steps listed can be read" listed_gettable
expect "the steps removed are gone whole" eq "$(rcli KEYS 'job:*' | grep -vc progress)" 2
expect "counted" test "$(rcli HGET stepq:stats capped)" -ge 5
kill -TERM "$WPID"; wait "$WPID" || true
expect "reap takes the cap too" eq "$($S reap --keep-completed 1 | jq .capped)" 1
expect "a cap of 0 is a usage error" eq "$($S reap --keep-completed 0 2>/dev/null; echo $?)" 2
finish
