#!/usr/bin/env bash
# A master killed (kill -9) in the middle of a migration walk, under load:
# its replica is promoted (cluster-node-timeout 1000 ms), every stepq process
# finds the new master and goes on, the walk reaches 'step', and every step
# is completed exactly once. STEPQ_WAIT_REPLICAS=1 makes each script wait
# for its replica (docs/cluster.md: what a failover can lose without it);
# STEPQ_WAIT_REPLICAS=0 in the environment runs it without (the soak's
# experiment).
. "$(dirname "$0")/lib.sh"
export STEPQ_WAIT_REPLICAS=${STEPQ_WAIT_REPLICAS-1} STEPQ_WAIT_MS=${STEPQ_WAIT_MS-200}

set -- $(masters)
victim=$2
F=$(ns_on fa "$victim")
tmp=$(mktemp -d "${TMPDIR:-/tmp}"/stepq-cfail.XXXXXX)
trap 'stop_submitter $tmp/f; stop_workers $tmp/f; [ -n "${KEEP:-}" ] || rm -rf "$tmp"; rm -f "$out"' EXIT
ns_clear "$F"
mkdir -p "$tmp/f"
echo "namespace $F on $victim, which is killed mid-walk"

preload "$F" "$tmp/f" 200
start_load "$F" "$tmp/f"

check "the master to kill has a live replica in sync (the premise)" '
    for _ in $(seq 1 100); do [ -n "$(replicas_of "$victim")" ] && break; sleep 0.1; done
    [ -n "$(replicas_of "$victim")" ]'
check "the walk reaches 'step' through the failover" '
    WALK_BACKFILL_OPTS="--batch 10 --rate 100" walk "$F" "$tmp/f" & w=$!
    for _ in $(seq 1 100); do grep -q "migrate backfill" "$tmp/f/walk.log" 2>/dev/null && break; sleep 0.05; done
    sleep 0.5
    kill -9 "$(cat "$CLUSTER_DIR/node-$victim/redis.pid")"
    wait $w; rc=$?
    grep -E "^\+|failed|stepq:" "$tmp/f/walk.log"
    [ $rc = 0 ]'
check "a replica took the slot over" '[ "$(ns_owner "$F")" != "$victim" ] && [ -n "$(ns_owner "$F")" ]'
stop_submitter "$tmp/f"
check "the queue drained on the new master" 'drained "$F" "$tmp/f" 40'
stop_workers "$tmp/f"
check "every step completed exactly once" 'accounted "$tmp/f"'
# The killed node comes back as a replica, for the tests that follow (a
# node that did not would leave a master without a replica: the next
# failover could not happen).
check "the killed node is back, as a replica, and the cluster whole" 'back_as_replica "$victim"'
ns_clear "$F"
finish
