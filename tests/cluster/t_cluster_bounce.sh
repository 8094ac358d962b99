#!/usr/bin/env bash
# A reshard by hand that ends in the wrong order: the source is told the
# slot's new owner (CLUSTER SETSLOT s NODE target) before the target is.
# Until the target is told too, each node sends the client to the other
# (MOVED back and forth). stepq must wait for the nodes to agree, as it
# waits for TRYAGAIN (up to STEPQ_CLUSTER_WAIT_MS), not give up after a
# burst of redirections: the command then succeeds once the operator
# finishes the reshard. And when nobody does, it stops at the wait with a
# "retry shortly" error (exit 1, docs/errors.md), not a loop; followed, that
# advice (finish the reshard, retry) lands the step once.
. "$(dirname "$0")/lib.sh"

set -- $(masters)
from=$1 to=$2
ns=$(ns_on bounce "$from") || { echo "no namespace on $from"; exit 1; }
s=$(ns_slot "$ns")
tmp=$(mktemp -d "${TMPDIR:-/tmp}"/stepq-cbounce.XXXXXX)
trap 'rm -rf "$tmp"; rm -f "$out"' EXIT
ns_clear "$ns" # SETSLOT NODE on the source needs an empty slot
tid=$(node_id "$to") fid=$(node_id "$from")

# bounce: the source gives the slot away, the target does not know yet.
bounce() { redis-cli -p "$from" cluster setslot "$s" node "$tid" >/dev/null; }
# settle OWNER_PORT OWNER_ID: every master agrees (target first).
settle() {
    local p
    for p in $1 $(masters); do redis-cli -p "$p" cluster setslot "$s" node "$2" >/dev/null 2>&1; done
    wait_cluster_ok
}

check "the nodes send a client back and forth while the target is not told" '
    bounce
    a=$(redis-cli -p "$from" set "${ns}x" 1 2>&1); b=$(redis-cli -p "$to" set "${ns}x" 1 2>&1)
    echo "source: $a; target: $b"
    [[ $a == *MOVED*:$to* && $b == *MOVED*:$from* ]]'

check "a submit during the bounce waits, then lands once the target is told" '
    t0=$(date +%s%N)
    STEPQ_CLUSTER_WAIT_MS=20000 $STEPQ --namespace "$ns" submit --type t >"$tmp/id" 2>"$tmp/err" &
    c=$!
    sleep 1.5
    kill -0 $c 2>/dev/null || { echo "exited before the target was told:"; cat "$tmp/err"; exit 1; }
    redis-cli -p "$to" cluster setslot "$s" node "$tid" >/dev/null
    wait $c || { cat "$tmp/err"; exit 1; }
    echo "took $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    [ "$(redis-cli -p "$to" hget "${ns}job:$(cat "$tmp/id")" status)" = pending ]'
settle "$to" "$tid"
ns_clear "$ns" # and back to the source, empty
settle "$from" "$fid"

check_code 1 "with nobody to finish it, the submit stops at the wait: retry later" '
    bounce
    STEPQ_CLUSTER_WAIT_MS=1500 $STEPQ --namespace "$ns" submit --type t'
grep -q "retry" "$out" && echo "ok   (its message says to retry)" || { echo "FAIL the message"; cat "$out"; failed=$((failed + 1)); }

check "the advice followed: the reshard finished, the retry lands, once" '
    redis-cli -p "$to" cluster setslot "$s" node "$tid" >/dev/null
    $STEPQ --namespace "$ns" submit --type t >"$tmp/id2" || exit 1
    n=$(redis-cli -p "$to" --scan --pattern "${ns}job:*" | wc -l)
    echo "steps in the namespace: $n"
    [ "$n" = 1 ] && [ "$(redis-cli -p "$to" hget "${ns}job:$(cat "$tmp/id2")" status)" = pending ] &&
        [ "$(redis-cli -p "$to" zcard "${ns}jobs:pending")" = 1 ]'
settle "$to" "$tid"
ns_clear "$ns"
settle "$from" "$fid"
ns_clear "$ns"
finish
