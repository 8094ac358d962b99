#!/usr/bin/env bash
# The whole migration walk of two namespaces at once, on two masters, under
# load (a submitter and a worker each): every step completed exactly once.
. "$(dirname "$0")/lib.sh"

set -- $(masters)
A=$(ns_on wa "$1") B=$(ns_on wa "$2")
tmp=$(mktemp -d "${TMPDIR:-/tmp}"/stepq-cwalk.XXXXXX)
trap 'stop_submitter $tmp/a; stop_submitter $tmp/b; stop_workers $tmp/a; stop_workers $tmp/b; [ -n "${KEEP:-}" ] || rm -rf "$tmp"; rm -f "$out"' EXIT
for ns in "$A" "$B"; do ns_clear "$ns"; done
echo "namespaces: $A on $1, $B on $2"

# Steps in the old keys before the walk, for the backfill to copy.
mkdir -p "$tmp/a" "$tmp/b"
for i in $(seq 1 100); do
    $STEPQ --namespace "$A" submit --type t --payload '{}' >>"$tmp/a/submitted"
    $STEPQ --namespace "$B" submit --type t --payload '{}' >>"$tmp/b/submitted"
done
start_load "$A" "$tmp/a"
start_load "$B" "$tmp/b"

check "both walks end in 'step' with every command once" '
    walk "$A" "$tmp/a" & pa=$!
    walk "$B" "$tmp/b" & pb=$!
    wait $pa; ra=$?; wait $pb; rb=$?
    cat "$tmp/a/walk.log" "$tmp/b/walk.log" | grep -E "^\+|failed|stepq:" | head -60
    [ $ra = 0 ] && [ $rb = 0 ]'
stop_submitter "$tmp/a"
stop_submitter "$tmp/b"
check "namespace A drained" 'drained "$A" "$tmp/a" 30'
check "namespace B drained" 'drained "$B" "$tmp/b" 30'
stop_workers "$tmp/a"
stop_workers "$tmp/b"
check "A: every step submitted during the walk completed exactly once" 'accounted "$tmp/a"'
check "B: every step submitted during the walk completed exactly once" 'accounted "$tmp/b"'
check "no old key is left, and the phase is step" '
    for ns in "$A" "$B"; do
        [ "$($STEPQ --namespace "$ns" migrate status --json 2>/dev/null | jq -r .phase)" = step ] ||
            $STEPQ --namespace "$ns" migrate status | grep -q "phase.*step"
        [ -z "$(redis-cli -p "$(ns_owner "$ns")" --scan --pattern "${ns}job:*")" ]
    done'
for ns in "$A" "$B"; do ns_clear "$ns"; done
finish
