#!/usr/bin/env bash
# A reshard in the middle of the backfill's member-by-member merge of a big
# collection (more than 1000 members: SSCAN/ZSCAN pages with a member
# cursor). A member cursor is a position in one node's table: after the
# collection moved, it means nothing on the new owner. The merge must wait
# for the slot to settle and read the collection again from 0 there (walk.c)
# instead of going on with the old cursor, which skips members. Verify then
# finds both sides equal. (The pending zset is moved first, so the merge is
# surely cut in the middle.)
. "$(dirname "$0")/lib.sh"

set -- $(masters)
R=$(ns_on rm "$1")
slot=$(ns_slot "$R") from=$1 to=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}"/stepq-creshardm.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"; rm -f "$out"' EXIT
ns_clear "$R"
mkdir -p "$tmp/r"
export STEPQ_CLUSTER_WAIT_MS=120000
echo "namespace $R, slot $slot, moving from $from to $to"

preload "$R" "$tmp/r" 1600
check "1600 steps pending in the old zset" '[ "$(redis-cli -p "$from" zcard "${R}jobs:pending")" = 1600 ]'
$STEPQ --namespace "$R" migrate phase dual-write >/dev/null
# A step submitted in dual-write creates the new zset: the old one is then
# merged into it member by member (a new collection would be one COPY).
$STEPQ --namespace "$R" submit --type t >/dev/null

merging() { # the backfill is inside the big zset: its member cursor moved on
    local c
    c=$(redis-cli -p "$from" hget "${R}stepq:backfill" member_cursor 2>/dev/null)
    [ -n "$c" ] && [ "$c" != 0 ]
}
check "the backfill goes on through a reshard cut in its member merge" '
    $STEPQ --namespace "$R" migrate backfill --batch 20 --rate 400 >"$tmp/r/backfill.log" 2>&1 & bf=$!
    for _ in $(seq 1 200); do merging && break; sleep 0.05; done
    merging || { echo "the backfill never reached the member merge"; exit 1; }
    echo "member cursor at $(redis-cli -p "$from" hget "${R}stepq:backfill" member_cursor) when the move began"
    open_move "$slot" "$from" "$to" "${R}jobs:pending" "${R}steps:pending"
    sleep 1
    move_slot "$slot" "$from" "$to" 100 0.02
    wait $bf; rc=$?
    cat "$tmp/r/backfill.log"
    [ $rc = 0 ]'
check "the slot is on the new master" '[ "$(ns_owner "$R")" = "$to" ]'
check "the new pending zset holds every member of the old one (1601)" '
    [ "$(redis-cli -p "$to" zcard "${R}steps:pending")" = 1601 ] ||
        { echo "$(redis-cli -p "$to" zcard "${R}steps:pending") of 1601"; exit 1; }'
check "verify finds both sides equal" '$STEPQ --namespace "$R" migrate verify'
ns_clear "$R"
finish
