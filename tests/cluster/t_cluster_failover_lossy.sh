#!/usr/bin/env bash
# A failover that loses the backfill's takeover of its run, and the advice
# followed. A first backfill is killed mid-run: its record (owner A,
# "running") reaches the replica. Then the replica's link is cut (it can no
# longer authenticate to its master, so nothing more reaches it), a second
# backfill takes the run over (owner B, a plain HSET) and copies on, and
# the master is killed with kill -9. The replica, promoted, has the record
# as the first run left it: the second backfill's next script finds owner A
# and stops on "another backfill process took this run over ... If none
# runs (a failover can lose the record's last write), run 'stepq migrate
# backfill' again: it resumes". The test does what the message says: the
# backfill run again takes the run over and resumes it (on a new master,
# from the beginning); verify is clean, and every step submitted before
# (none during the cut, whose writes are lost) is there and runs once.
. "$(dirname "$0")/lib.sh"
export STEPQ_CLUSTER_WAIT_MS=60000
# Every node is a seed: the processes started after the kill find the
# cluster even when the URL's node is the one killed.
STEPQ_CLUSTER_SEEDS=$(printf '127.0.0.1:%s,' $CLUSTER_PORTS)
export STEPQ_CLUSTER_SEEDS=${STEPQ_CLUSTER_SEEDS%,}

# A master with a replica in sync; the namespace on it.
read -r victim rep < <(victim_pick) || { echo "no master with a replica in sync"; exit 1; }
L=$(ns_on fl "$victim")
tmp=$(mktemp -d "${TMPDIR:-/tmp}"/stepq-clossy.XXXXXX)
restore() {
    redis-cli -p "$rep" config set masterauth "" >/dev/null 2>&1
    stop_submitter "$tmp/l" 2>/dev/null
    stop_workers "$tmp/l" 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$tmp"
    rm -f "$out"
}
trap restore EXIT
ns_clear "$L"
mkdir -p "$tmp/l"
echo "namespace $L on $victim, its replica $rep"

# The replica has every write of its master (the offsets agree).
in_sync() {
    local mo ro
    for _ in $(seq 1 100); do
        mo=$(redis-cli -p "$victim" info replication | tr -d '\r' | sed -n 's/^master_repl_offset://p')
        ro=$(redis-cli -p "$rep" info replication | tr -d '\r' | sed -n 's/^slave_repl_offset://p')
        [ -n "$mo" ] && [ "$mo" = "$ro" ] && return 0
        sleep 0.1
    done
    echo "replica $rep at offset $ro, master $victim at $mo"
    return 1
}
# A field of the run record, read on the node of port $1 (a replica reads
# with READONLY).
rec() { printf 'READONLY\nHGET %sstepq:backfill %s\n' "$L" "$2" | redis-cli -p "$1" | tail -1; }
copying() { local d; d=$(rec "$victim" keys_done); [ -n "$d" ] && [ "$d" -gt "$1" ]; }

preload "$L" "$tmp/l" 300
$STEPQ --namespace "$L" migrate phase dual-write >/dev/null
check "300 steps and the phase on the replica" 'in_sync'

check "a first backfill, killed mid-run, leaves its record on both nodes" '
    $STEPQ --namespace "$L" migrate backfill --batch 10 --rate 100 >"$tmp/l/bf1.log" 2>&1 & bf=$!
    for _ in $(seq 1 200); do copying 0 && break; sleep 0.05; done
    kill -9 $bf; wait $bf || true
    copying 0
    in_sync
    [ "$(rec "$rep" state)" = running ] && [ -n "$(rec "$rep" owner)" ]'
owner_a=$(rec "$rep" owner)

check "the replica cut off: it cannot authenticate to its master again" '
    redis-cli -p "$rep" config set masterauth not-the-password >/dev/null
    redis-cli -p "$victim" client kill type replica >/dev/null
    sleep 1.5
    redis-cli -p "$victim" info replication | tr -d "\r" | grep -qx connected_slaves:0'

check "a second backfill takes the run over, the master is killed, the takeover is lost" '
    $STEPQ --namespace "$L" migrate backfill --batch 10 --rate 100 >"$tmp/l/bf2.log" 2>&1 & bf=$!
    for _ in $(seq 1 200); do
        [ -n "$(rec "$victim" owner)" ] && [ "$(rec "$victim" owner)" != "$owner_a" ] && break
        sleep 0.05
    done
    done1=$(rec "$victim" keys_done)
    for _ in $(seq 1 100); do copying "$done1" && break; sleep 0.05; done
    echo "second run: owner $(rec "$victim" owner), $(rec "$victim" keys_done) keys done; killing $victim" |
        tee "$tmp/l/killed"
    kill -9 "$(cat "$CLUSTER_DIR/node-$victim/redis.pid")"
    rc=0; wait $bf || rc=$?
    cat "$tmp/l/bf2.log"
    [ $rc = 4 ]
    grep -q "another backfill process took this run over" "$tmp/l/bf2.log"
    grep -q "run .stepq migrate backfill. again: it resumes" "$tmp/l/bf2.log"'
sed 's/^/     /' "$tmp/l/killed" 2>/dev/null
grep -h "^stepq:" "$tmp/l/bf2.log" 2>/dev/null | cut -c1-150 | sed 's/^/     /'
check "the replica took the slot over, with the first run's owner in the record" '
    [ "$(ns_owner "$L")" = "$rep" ]
    [ "$(rec "$rep" owner)" = "$owner_a" ]'

check "the advice followed: the backfill run again resumes the run and ends" '
    $STEPQ --namespace "$L" migrate backfill --json >"$tmp/l/bf3.log" 2>&1
    cat "$tmp/l/bf3.log"
    [ "$(jq -r "select(.resumed != null) | .resumed" <"$tmp/l/bf3.log")" = true ]
    [ "$(rec "$rep" state)" = done ]'
echo "     the run again: $(jq -c "select(.resumed != null)" "$tmp/l/bf3.log" 2>/dev/null)"
check "verify finds both sides equal" '$STEPQ --namespace "$L" migrate verify'
check "no step lost: all 300 there, and each runs to its end once" '
    start_load "$L" "$tmp/l"
    stop_submitter "$tmp/l"
    drained "$L" "$tmp/l" 60
    stop_workers "$tmp/l"
    accounted "$tmp/l" | tee "$tmp/l/acc"'
sed 's/^/     /' "$tmp/l/acc" 2>/dev/null

# The killed node comes back as a replica of the promoted one, its own
# link as it was, for the tests that follow.
check "the killed node is back, as a replica, and the cluster whole" '
    redis-cli -p "$rep" config set masterauth "" >/dev/null
    back_as_replica "$victim"'
ns_clear "$L"
finish
