#!/usr/bin/env bash
# The guard key ({ns}stepq:slot-guard, docs/cluster.md): a queue script must
# not start while its slot migrates. Redis checks only a script's declared
# keys before it runs (all present: it runs); a key the script reaches by a
# computed name (a step's record, from an id read inside) and that already
# moved fails inside the script: redis.call() aborts it after its earlier
# writes, redis.pcall() returns an error the script goes on with. claim
# reads a record with pcall and drops a member whose record it cannot read
# as an orphan: the step would be lost; complete answers CONFLICT: the step
# would run again.
#
# The hole needs every declared key present on the source: the phase (after
# any phase move), the counters (after any counted event) and the event
# counter stepq:evseq, which stepq no longer writes but a namespace used by a
# stepq before the random event ids keeps (an INCR per event). Without that
# key Redis already answers TRYAGAIN; the guard makes the wait independent of
# which keys happen to exist. Part A is that case (it passes without the
# guard too); part B is the namespace with all three, where removing the
# guard loses a step (checked by hand, see the commit).
. "$(dirname "$0")/lib.sh"

set -- $(masters)
from=$1 to=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}"/stepq-cguard.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"; rm -f "$out"' EXIT
export STEPQ_CLUSTER_WAIT_MS=60000

# still_running PID SECONDS: PID has not exited after SECONDS.
still_running() { sleep "$2"; kill -0 "$1" 2>/dev/null; }

# A namespace with phase dual-write, one counted event (an orphan member
# dropped by a claim: stepq:stats exists) and three steps s1 s2 s3 pending,
# their ids in DIR/ids (s1 first: claims take it first).
setup() { # NS DIR
    local ns=$1 d=$2
    mkdir -p "$d"
    ns_clear "$ns"
    $STEPQ --namespace "$ns" migrate phase dual-write >/dev/null
    redis-cli -p "$(ns_owner "$ns")" zadd "${ns}jobs:pending" 0 ghost >/dev/null
    $STEPQ --namespace "$ns" claim --worker wg >/dev/null 2>&1
    for _ in 1 2 3; do $STEPQ --namespace "$ns" submit --type t; done >"$d/ids"
}

# A claim while the slot migrates and the first step's records (old and new)
# already moved, the pending zsets not: the claim waits for the end of the
# move, then claims s1 on the new owner; nothing is dropped.
claim_through_move() { # NS DIR
    local ns=$1 d=$2 s f t s1 c waited
    s=$(ns_slot "$ns") f=$(ns_owner "$ns") t=$to
    [ "$f" = "$to" ] && t=$from
    s1=$(head -1 "$d/ids")
    open_move "$s" "$f" "$t" "${ns}job:$s1" "${ns}step:$s1"
    $STEPQ --namespace "$ns" claim --worker wg --json >"$d/claim.out" 2>&1 &
    c=$!
    still_running $c 1.5 && waited=1 || waited=0
    echo "pending on the source after 1.5 s: $(redis-cli -p "$f" zcard "${ns}jobs:pending")"
    move_slot "$s" "$f" "$t" 50 0 # always: the next checks need a settled slot
    wait $c || { echo "claim failed:"; cat "$d/claim.out"; return 1; }
    [ $waited = 1 ] || { echo "the claim did not wait for the move"; return 1; }
    [ "$(jq -r .id "$d/claim.out")" = "$s1" ] || { echo "claimed $(jq -r .id "$d/claim.out"), want $s1"; return 1; }
    jq -r .token "$d/claim.out" >"$d/tok1"
}

# Every step claimed and completed, none dropped: the orphan count is still
# the one ghost of setup().
all_complete() { # NS DIR
    local ns=$1 d=$2 id tok n=0
    while c=$($STEPQ --namespace "$ns" claim --worker wg --json 2>/dev/null); do
        $STEPQ --namespace "$ns" complete "$(echo "$c" | jq -r .id)" --token "$(echo "$c" | jq -r .token)" >/dev/null
    done
    id=$(head -1 "$d/ids") tok=$(cat "$d/tok1")
    [ "$($STEPQ --namespace "$ns" get "$id" | jq -r .status)" = completed ] ||
        $STEPQ --namespace "$ns" complete "$id" --token "$tok" >/dev/null
    while read -r id; do
        [ "$($STEPQ --namespace "$ns" get "$id" | jq -r .status)" = completed ] && n=$((n + 1))
    done <"$d/ids"
    echo "$n of 3 completed, orphans dropped: $(redis-cli -p "$(ns_owner "$ns")" hget "${ns}stepq:stats" orphans_dropped)"
    [ "$n" = 3 ] && [ "$(redis-cli -p "$(ns_owner "$ns")" hget "${ns}stepq:stats" orphans_dropped)" = 1 ]
}

A=$(ns_on ga "$from")
B=$(ns_on gb "$from")
echo "namespaces $A and $B on $from, moved to $to"

check "Redis runs a script whose declared keys are all present, and a call on a moved key fails inside it" '
    s=$(ns_slot "$B") k1="${B}premise:a" k2="${B}premise:b"
    redis-cli -p "$from" mset "$k1" 1 "$k2" 1 >/dev/null
    open_move "$s" "$from" "$to" "$k2"
    r=$(redis-cli -p "$from" eval "redis.call(\"SET\", KEYS[1], 2)
        local v = redis.pcall(\"GET\", \"$k2\") return {tostring(v.err), redis.call(\"GET\", KEYS[1])}" 1 "$k1")
    echo "$r"
    echo "$r" | grep -q "non local key"
    [ "$(echo "$r" | tail -1)" = 2 ]
    [ "$(redis-cli -p "$from" eval "return 1" 2 "$k1" "${B}stepq:slot-guard" | cut -d" " -f1)" = TRYAGAIN ]
    move_slot "$s" "$from" "$to" 50 0
    move_slot "$s" "$to" "$from" 50 0
    redis-cli -p "$from" del "$k1" "$k2" >/dev/null'

setup "$A" "$tmp/a"
check "A: no stepq:evseq: a claim waits out the move and loses nothing" '
    [ "$(redis-cli -p "$from" exists "${A}stepq:evseq")" = 0 ]
    claim_through_move "$A" "$tmp/a"
    all_complete "$A" "$tmp/a"'

setup "$B" "$tmp/b"
# The event counter an older stepq kept (an INCR per event).
redis-cli -p "$from" set "${B}stepq:evseq" 41 >/dev/null
check "B: every declared key of the queue scripts is present on the source" '
    [ "$(redis-cli -p "$from" exists "${B}stepq:phase" "${B}stepq:stats" "${B}stepq:evseq")" = 3 ]'
check "B: a claim waits out the move (the guard) and loses nothing" '
    claim_through_move "$B" "$tmp/b"'
check "B: a completion while the step's records moved waits, then completes" '
    s=$(ns_slot "$B") f=$(ns_owner "$B") t=$from
    s1=$(head -1 "$tmp/b/ids")
    open_move "$s" "$f" "$t" "${B}job:$s1" "${B}step:$s1"
    $STEPQ --namespace "$B" complete "$s1" --token "$(cat "$tmp/b/tok1")" >"$tmp/b/complete.out" 2>&1 & c=$!
    still_running $c 1.5 && waited=1 || waited=0
    move_slot "$s" "$f" "$t" 50 0
    wait $c || { cat "$tmp/b/complete.out"; exit 1; }
    [ $waited = 1 ] || { echo "the completion did not wait for the move"; exit 1; }
    [ "$($STEPQ --namespace "$B" get "$s1" | jq -r .status)" = completed ]'
check "B: every step completed, none dropped" 'all_complete "$B" "$tmp/b"'
ns_clear "$A"
ns_clear "$B"
finish
