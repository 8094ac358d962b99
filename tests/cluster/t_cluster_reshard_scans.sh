#!/usr/bin/env bash
# A reshard in the middle of verify's and of cleanup's member-by-member pass
# over a big collection (SSCAN/ZSCAN with a member cursor, which means
# nothing on the new owner): each must wait for the slot to settle and read
# the collection again from member 0 (walk.c, verify_big.c, cleanup.c).
#
# verify: the same verify run on a settled slot and through the move must
# give the same verdicts and the same digests (a member skipped or counted
# twice changes the digest: no false "equal", no false difference).
# cleanup --adopt: every member of an old big set whose new record says
# pending but that no new queue holds is put in the new pending queue before
# the set goes; a member skipped would be a pending step in no queue.
# (The collections are moved first, when the pass is seen reading them.)
. "$(dirname "$0")/lib.sh"

set -- $(masters)
from=$1 to=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}"/stepq-cscans.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"; rm -f "$out"' EXIT
export STEPQ_CLUSTER_WAIT_MS=120000

# Calls of a command on a node so far (INFO commandstats).
calls() {
    redis-cli -p "$1" info commandstats | tr -d '\r' |
        awk -F'[=,]' -v c="cmdstat_$2:calls" '$1 == c { n = $2 } END { print n + 0 }'
}
# Member scans (SSCAN and ZSCAN) run on a node so far.
member_scans() { echo $(($(calls "$1" sscan) + $(calls "$1" zscan))); }
wait_member_pass() { # PORT BEFORE PID
    for _ in $(seq 1 400); do
        [ "$(member_scans "$1")" -gt "$2" ] && return 0
        kill -0 "$3" 2>/dev/null || break
        sleep 0.01
    done
    echo "no member scan seen on $1"
    return 1
}
# move_now SLOT KEYS...: the slot MIGRATING, KEYS moved at once, the rest
# after a second: a pass that was reading KEYS meets the move in its middle.
move_now() {
    local s=$1
    shift
    open_move "$s" "$from" "$to" "$@"
    sleep 1
    move_slot "$s" "$from" "$to" 100 0
}
# fill PORT KEY set|zset N PREFIX: N members PREFIX1..PREFIXN (zset: score i).
fill() {
    redis-cli -p "$1" eval '
        local k, t, n, p = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
        for i = 1, n, 500 do
            local a = {}
            for j = i, math.min(n, i + 499) do
                if t == "zset" then a[#a + 1] = j end
                a[#a + 1] = p .. j
            end
            redis.call(t == "zset" and "ZADD" or "SADD", k, unpack(a))
        end
        return n' 1 "$2" "$3" "$4" "$5" >/dev/null
}

# --- verify ---
# 20000 members a collection: verify compares a pair of more than 10000
# members (its threshold for big collections) member by member.
V=$(ns_on vs "$from")
vslot=$(ns_slot "$V")
ns_clear "$V"
echo "verify: namespace $V, slot $vslot, from $from to $to"
$STEPQ --namespace "$V" migrate phase dual-write >/dev/null
fill "$from" "${V}jobs:pending" zset 20000 m
fill "$from" "${V}steps:pending" zset 20000 m
fill "$from" "${V}jobs:active" set 20000 a
fill "$from" "${V}steps:active" set 20000 a
# One member of the new active set differs, the sizes still equal.
redis-cli -p "$from" srem "${V}steps:active" a17 >/dev/null
redis-cli -p "$from" sadd "${V}steps:active" x17 >/dev/null

fields='[.equal, .different, .missing, .digest_old, .digest_new] | @tsv'
check "verify on the settled slot: the pending zsets equal, the active sets different" '
    rc=0
    $STEPQ --namespace "$V" migrate verify --json --batch 10 --rounds 1 >"$tmp/v.ref" || rc=$?
    jq -r "$fields" "$tmp/v.ref"
    [ $rc = 1 ] && [ "$(jq -r "[.equal, .different] | @tsv" "$tmp/v.ref")" = "$(printf "1\t1")" ]'
check "verify through a reshard cut in its member pass: the same verdicts and digests" '
    before=$(member_scans "$from") on_to=$(member_scans "$to")
    $STEPQ --namespace "$V" migrate verify --json --batch 10 --rounds 1 --rate 8000 >"$tmp/v.moved" 2>"$tmp/v.err" & v=$!
    wait_member_pass "$from" "$before" $v
    move_now "$vslot" "${V}jobs:pending" "${V}steps:pending" "${V}jobs:active" "${V}steps:active"
    rc=0
    wait $v || rc=$?
    cat "$tmp/v.err"
    echo "settled: $(jq -r "$fields" "$tmp/v.ref")"
    echo "moved:   $(jq -r "$fields" "$tmp/v.moved")"
    [ "$(ns_owner "$V")" = "$to" ]
    # The move cut the pass: it went on reading members on the new owner.
    [ "$(member_scans "$to")" -gt "$on_to" ] || { echo "verify read no member on the new owner"; exit 1; }
    [ $rc = 1 ] && [ "$(jq -r "$fields" "$tmp/v.moved")" = "$(jq -r "$fields" "$tmp/v.ref")" ]'
ns_clear "$V"

# --- cleanup ---
C=$(ns_on cs "$from")
cslot=$(ns_slot "$C")
ns_clear "$C"
echo "cleanup: namespace $C, slot $cslot, from $from to $to"
for p in dual-write dual-read step-primary step; do
    $STEPQ --namespace "$C" migrate phase $p --force --reason "t_cluster_reshard_scans" >/dev/null
done
# An old set of 100000 ids: every 50th has a new record that says pending
# but is in no new queue (2000 steps to adopt); the others have no record
# on either side (gone: safe to drop).
fill "$from" "${C}jobs:completed" set 100000 id
redis-cli -p "$from" eval '
    for i = 50, 100000, 50 do
        redis.call("HSET", string.gsub(KEYS[1], "ID", "id" .. i), "id", "id" .. i, "status", "pending", "priority", "0")
    end' 1 "${C}step:ID" >/dev/null
check "cleanup --adopt through a reshard cut in its member pass: every pending step enqueued, then the set deleted" '
    $STEPQ --namespace "$C" migrate backup --out "$tmp/c.bak" --quiet
    before=$(member_scans "$from") on_to=$(member_scans "$to")
    $STEPQ --namespace "$C" migrate cleanup --backup "$tmp/c.bak" --adopt --force --json >"$tmp/c.out" 2>"$tmp/c.err" & c=$!
    wait_member_pass "$from" "$before" $c
    move_now "$cslot" "${C}jobs:completed"
    rc=0
    wait $c || rc=$?
    cat "$tmp/c.err"; tail -1 "$tmp/c.out" | jq -c "{deleted, kept, adopted}" 2>/dev/null || cat "$tmp/c.out"
    [ "$(ns_owner "$C")" = "$to" ]
    [ "$(member_scans "$to")" -gt "$on_to" ] || { echo "cleanup read no member on the new owner"; exit 1; }
    n=$(redis-cli -p "$to" zcard "${C}steps:pending")
    echo "$n of 2000 in the new pending queue; old set: $(redis-cli -p "$to" exists "${C}jobs:completed")"
    [ $rc = 0 ] && [ "$n" = 2000 ] && [ "$(redis-cli -p "$to" exists "${C}jobs:completed")" = 0 ]'
ns_clear "$C"
finish
