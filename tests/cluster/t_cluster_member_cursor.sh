#!/usr/bin/env bash
# A member cursor is refused after a redirection that a single command
# followed between two member pages (stepq__queue_members in src/walk.c):
# the backfill's pacing reads the throttle hash between two pages of a big
# set's merge, the slot has just moved, the read follows MOVED to the new
# owner, and the next page must not be read there with the old node's
# cursor. The merge is driven by the pacing's clock, in C
# (tests/cluster/member_cursor.c, which says how); with the refusal removed
# the new set lacks members and verify is dirty (about 5 s).
. "$(dirname "$0")/lib.sh"
: "${CLUSTER_MEMBER_CURSOR:?run through ctest}"

read -r from to other < <(masters | tr '\n' ' ')
M=$(ns_on mc "$from")
ns_clear "$M"
echo "namespace $M, slot $(ns_slot "$M"), moved from $from to $to between two member pages"
check "the merge reads the set again on the new owner" '"$CLUSTER_MEMBER_CURSOR" "$CLUSTER_URL" "$M" "$from" "$to" "$other"'
check "the slot is on the new master" '[ "$(ns_owner "$M")" = "$to" ]'
ns_clear "$M"
finish
