#!/usr/bin/env bash
# A worker whose slot has no master stops promptly on SIGTERM. While the
# worker runs a step, the namespace's replica is stopped (SIGSTOP) and its
# master killed (kill -9): the map still names the dead master, nothing can
# take its slot over, and every connection is refused. On SIGTERM the
# worker must exit within its grace and a few seconds, not after the
# library's reconnection waits (up to STEPQ_CLUSTER_WAIT_MS, 20 s, a call).
# Its step is not lost: once the replica runs again and took the slot over
# it is still held, and after a reaper pass it runs to its end; the killed
# node comes back as a replica (about 30 s).
. "$(dirname "$0")/lib.sh"

read -r victim rep < <(victim_pick) || { echo "no master with a replica in sync"; exit 1; }
W=$(ns_on ws "$victim")
tmp=$(mktemp -d "${TMPDIR:-/tmp}"/stepq-cwstop.XXXXXX)
pid_of() { cat "$CLUSTER_DIR/node-$1/redis.pid"; }
wake() { kill -CONT "$(pid_of "$rep")" 2>/dev/null; }
trap 'wake; [ -n "${WPID:-}" ] && kill -9 "$WPID" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$tmp"; rm -f "$out"' EXIT
ns_clear "$W"
echo "namespace $W on $victim (replica $rep): the replica stopped, the master killed, while the worker runs a step"

id=$($STEPQ --namespace "$W" submit --type t)
# A heartbeat a second (ttl 3 s): when SIGTERM comes, a heartbeat is in the
# middle of its reconnection to the dead master.
$STEPQ --namespace "$W" worker --id ws1 --grace 1 --heartbeat-ttl-ms 3000 -- sleep 60 2>"$tmp/worker.log" &
WPID=$!
check "the worker runs the step" '
    for _ in $(seq 1 100); do
        [ "$($STEPQ --namespace "$W" get "$id" | jq -r .status)" = active ] && break; sleep 0.1
    done
    [ "$($STEPQ --namespace "$W" get "$id" | jq -r .status)" = active ]'

check "the replica has the step (the premise)" '
    for _ in $(seq 1 100); do
        st=$(printf "READONLY\nHGET %sjob:%s status\n" "$W" "$id" | redis-cli -p "$rep" | tail -1)
        [ "$st" = active ] && break; sleep 0.1
    done
    [ "$st" = active ]'
kill -STOP "$(pid_of "$rep")"
kill -9 "$(pid_of "$victim")"
sleep 3 # the cluster marks the master failed; nothing can take its slot
t0=$(date +%s%3N)
kill -TERM "$WPID"
for _ in $(seq 1 900); do kill -0 "$WPID" 2>/dev/null || break; sleep 0.1; done
ms=$(($(date +%s%3N) - t0))
kill -0 "$WPID" 2>/dev/null && { kill -9 "$WPID"; ms="more than 90000"; }
wait "$WPID" 2>/dev/null
WPID=
echo "     the worker exited $ms ms after SIGTERM"
check "the worker exits within its grace (1 s) and 6 s more" '
    cat "$tmp/worker.log"; [ "${ms%% *}" != more ] && [ "$ms" -lt 7000 ]'

kill -CONT "$(pid_of "$rep")"
check "the replica takes the slot over" '
    for _ in $(seq 1 150); do [ "$(ns_owner "$W")" = "$rep" ] && break; sleep 0.2; done
    [ "$(ns_owner "$W")" = "$rep" ] && wait_cluster_ok'
check "the step is not lost: held or handed back, then run to its end" '
    st=$($STEPQ --namespace "$W" get "$id" | jq -r .status)
    echo "after the failover: $st"
    [ "$st" = active ]
    sleep 1.2
    $STEPQ --namespace "$W" reap --timeout-ms 1000 >/dev/null
    [ "$($STEPQ --namespace "$W" get "$id" | jq -r .status)" = pending ]
    $STEPQ --namespace "$W" worker --id ws2 -- true 2>"$tmp/worker2.log" & w2=$!
    for _ in $(seq 1 100); do
        [ "$($STEPQ --namespace "$W" get "$id" | jq -r .status)" = completed ] && break; sleep 0.1
    done
    kill -TERM $w2; wait $w2
    [ "$($STEPQ --namespace "$W" get "$id" | jq -r .status)" = completed ]'
check "the killed node is back, as a replica, and the cluster whole" 'back_as_replica "$victim"'
ns_clear "$W"
finish
