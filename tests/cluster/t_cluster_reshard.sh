#!/usr/bin/env bash
# A reshard of a namespace's slot in the middle of its backfill, under load:
# the backfill waits for the slot to settle and starts over on the new
# owner, queue operations wait out TRYAGAIN/ASK, verify finds the sides
# equal, and every step is completed exactly once.
. "$(dirname "$0")/lib.sh"

set -- $(masters)
R=$(ns_on ra "$1")
slot=$(ns_slot "$R") from=$1 to=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}"/stepq-creshard.XXXXXX)
trap 'stop_submitter $tmp/r; stop_workers $tmp/r; [ -n "${KEEP:-}" ] || rm -rf "$tmp"; rm -f "$out"' EXIT
ns_clear "$R"
mkdir -p "$tmp/r"
echo "namespace $R, slot $slot, moving from $from to $to"

# Old keys for the backfill.
preload "$R" "$tmp/r" 300
$STEPQ --namespace "$R" migrate phase dual-write >/dev/null
start_load "$R" "$tmp/r"

check "the backfill goes on through the reshard of its slot" '
    $STEPQ --namespace "$R" migrate backfill --batch 10 --rate 150 >"$tmp/r/backfill.log" 2>&1 & bf=$!
    sleep 1
    move_slot "$slot" "$from" "$to" 10 0.05
    wait $bf; rc=$?
    cat "$tmp/r/backfill.log"
    [ $rc = 0 ]'
check "the slot is on the new master, with every key of the namespace" '
    [ "$(ns_owner "$R")" = "$to" ]
    [ -z "$(redis-cli -p "$from" --scan --pattern "$R*")" ]'
check "verify finds both sides equal after the reshard" \
    '$STEPQ --namespace "$R" migrate verify'
stop_submitter "$tmp/r"
check "the queue drained on the new master" 'drained "$R" "$tmp/r" 30'
stop_workers "$tmp/r"
check "every step completed exactly once" 'accounted "$tmp/r"'
check "no submit failed during the reshard" '[ ! -s "$tmp/r/submit.err" ] || { cat "$tmp/r/submit.err"; false; }'
ns_clear "$R"
finish
