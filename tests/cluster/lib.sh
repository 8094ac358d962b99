# tests/cluster/lib.sh - what the cluster tests share. They run against the
# cluster of the `cluster` ctest fixture (tests/cluster/cluster.sh), whose
# directory is CLUSTER_DIR; each test picks hash tags of its own (a prefix
# per test), so tests never share a key.
#   check "title" 'commands'         the commands exit 0
#   check_code N "title" 'commands'  the last command exits N
set -u
: "${STEPQ:?run through ctest}" "${CLUSTER_DIR:?run through ctest}"
. "$CLUSTER_DIR/env"
export REDIS_URL=$CLUSTER_URL
passed=0
failed=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

verdict() { # rc title
    if [ "$1" = 0 ]; then
        passed=$((passed + 1)); echo "ok   $2"
    else
        failed=$((failed + 1)); echo "FAIL $2"; sed 's/^/     | /' "$out" >&2
    fi
}
check() { (set -e; eval "$2") >"$out" 2>&1; verdict $? "$1"; }
check_code() {
    local rc
    (eval "$3") >"$out" 2>&1
    rc=$?
    [ "$rc" = "$1" ] || echo "exit code $rc, want $1" >>"$out"
    verdict $([ "$rc" = "$1" ] && echo 0 || echo 1) "$2"
}
finish() { echo "$passed passed, $failed failed"; [ "$failed" = 0 ]; }

# Any node that answers (the first may be the one a test killed).
rc1() { local p; for p in $CLUSTER_PORTS; do redis-cli -p "$p" "$@" 2>/dev/null && return; done; }

# The port of the master that owns slot $1 now.
slot_owner() {
    rc1 cluster nodes | awk -v s="$1" '$3 ~ /master/ && $3 !~ /fail/ {
        for (i = 9; i <= NF; i++) { n = split($i, r, "-"); lo = r[1]; hi = n > 1 ? r[2] : r[1];
            if ($i !~ /^\[/ && s + 0 >= lo + 0 && s + 0 <= hi + 0) { sub(/@.*/, "", $2); sub(/.*:/, "", $2); print $2 } } }'
}
ns_slot() { rc1 cluster keyslot "$1x"; }
ns_owner() { slot_owner "$(ns_slot "$1")"; }
masters() { rc1 cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ && NF > 8 { sub(/@.*/, "", $2); sub(/.*:/, "", $2); print $2 }' | sort -n; }

# A namespace '{PREFIXn}:' whose slot the master at port $2 owns.
ns_on() {
    local n
    for n in $(seq 1 500); do
        if [ "$(ns_owner "{$1$n}:")" = "$2" ]; then echo "{$1$n}:"; return 0; fi
    done
    return 1
}

# Every key of a namespace, read on its owner (one slot: one node).
ns_keys() { redis-cli -p "$(ns_owner "$1")" --scan --pattern "$1*"; }
ns_clear() {
    local own
    own=$(ns_owner "$1")
    redis-cli -p "$own" --scan --pattern "$1*" | xargs -r -d '\n' -n 200 redis-cli -p "$own" del >/dev/null
}

wait_cluster_ok() {
    local p ok
    for _ in $(seq 1 200); do
        ok=1
        for p in $CLUSTER_PORTS; do
            redis-cli -p "$p" ping >/dev/null 2>&1 || continue
            redis-cli -p "$p" cluster info | grep -q cluster_state:ok || ok=0
        done
        [ $ok = 1 ] && return 0
        sleep 0.1
    done
    return 1
}

# --- load: workers and submitters on a namespace, and the accounting ---
# start_load NS DIR [WORKERS]: DIR/submitted gets every id a submit returned
# (appended: ids submitted before may be there already);
# the workers run tests/chaos/step.sh (DIR/runs.log, DIR/overlaps).
start_load() {
    local ns=$1 d=$2 nw=${3:-1} i
    mkdir -p "$d/locks"
    touch "$d/submitted" "$d/runs.log"
    for i in $(seq 1 "$nw"); do
        $STEPQ --namespace "$ns" worker --id "w$i" --concurrency 4 --heartbeat-ttl-ms 3000 \
            -- bash "$(dirname "${BASH_SOURCE[0]}")/../chaos/step.sh" "$d" >>"$d/worker$i.log" 2>&1 &
        echo $! >>"$d/worker.pids"
    done
    (
        trap 'exit 0' TERM
        while :; do
            # The id goes straight to the file: the TERM trap runs only
            # after the submit returned, so no id is cut off.
            $STEPQ --namespace "$ns" submit --type t --payload '{"n":1}' >>"$d/submitted" 2>>"$d/submit.err"
            sleep 0.02
        done
    ) &
    echo $! >"$d/submitter.pid"
}
# preload NS DIR N: N steps in the old keys (four submitters at once), their
# ids into DIR/submitted.
preload() {
    local ns=$1 d=$2 per=$(($3 / 4)) j
    mkdir -p "$d"
    for j in 1 2 3 4; do
        (for _ in $(seq 1 "$per"); do $STEPQ --namespace "$ns" submit --type t --payload '{}'; done >"$d/pre$j") &
    done
    wait
    cat "$d"/pre? >>"$d/submitted"
}
stop_submitter() { kill "$(cat "$1/submitter.pid")" 2>/dev/null; wait "$(cat "$1/submitter.pid")" 2>/dev/null; true; }
stop_workers() {
    local p
    for p in $(cat "$1/worker.pids"); do kill "$p" 2>/dev/null; done
    for p in $(cat "$1/worker.pids"); do wait "$p" 2>/dev/null; done
    true
}
# drained NS DIR SECONDS: every submitted step completed (status read
# through stepq, on the side the phase reads); each pass asks only about
# the steps not seen completed yet.
drained() {
    local ns=$1 d=$2 id left
    sort -u "$d/submitted" >"$d/left"
    for _ in $(seq 1 $(($3 * 2))); do
        while read -r id; do
            [ "$($STEPQ --namespace "$ns" get "$id" 2>/dev/null | jq -r .status)" = completed ] || echo "$id"
        done <"$d/left" >"$d/left.next"
        mv "$d/left.next" "$d/left"
        left=$(wc -l <"$d/left")
        [ "$left" = 0 ] && return 0
        sleep 0.5
    done
    echo "$ns: $left steps not completed:" >&2
    head -5 "$d/left" >&2
    return 1
}
# accounted DIR: each submitted step ran to its end exactly once, none
# overlapped, and no step ran that was not submitted. With SOAK_LOG set, one
# line of figures goes there too (tests/cluster/soak.sh adds them up).
accounted() {
    local d=$1 n lost twice extra ov
    grep . "$d/submitted" | sort -u >"$d/acc.submitted"
    awk '$1 == "end" && $5 == "ok" { print $2 }' "$d/runs.log" | sort >"$d/acc.ends"
    n=$(wc -l <"$d/acc.submitted")
    twice=$(uniq -d "$d/acc.ends" | wc -l)
    lost=$(sort -u "$d/acc.ends" | comm -23 "$d/acc.submitted" - | wc -l)
    extra=$(sort -u "$d/acc.ends" | comm -13 "$d/acc.submitted" - | wc -l)
    ov=$(cat "$d/overlaps" 2>/dev/null | wc -l)
    [ -z "${SOAK_LOG:-}" ] ||
        echo "$(basename "$0" .sh) steps=$n lost=$lost twice=$twice extra=$extra overlaps=$ov" >>"$SOAK_LOG"
    [ "$ov" = 0 ] || { echo "overlaps:"; cat "$d/overlaps"; return 1; }
    [ "$lost" = 0 ] || { echo "$lost of $n submitted steps never completed:"; sort -u "$d/acc.ends" | comm -23 "$d/acc.submitted" - | head -5; return 1; }
    [ "$extra" = 0 ] || { echo "$extra steps ran that were not submitted"; return 1; }
    [ "$twice" = 0 ] || { echo "$twice steps ended twice:"; uniq -d "$d/acc.ends" | head -5; return 1; }
    echo "$n steps, each completed once"
}

# walk NS DIR: the whole migration (docs/migration.md), each command once;
# the log is DIR/walk.log; returns the first failing command's code.
walk() {
    local ns=$1 d=$2 cmd
    while read -r cmd; do
        [ -n "$cmd" ] || continue
        echo "+ $cmd" >>"$d/walk.log"
        eval "$STEPQ --namespace '$ns' $cmd" >>"$d/walk.log" 2>&1 || { echo "failed: $cmd" >>"$d/walk.log"; return 1; }
    done <<WALK
migrate phase dual-write
migrate backfill ${WALK_BACKFILL_OPTS:-}
migrate verify
migrate phase dual-read
migrate verify
migrate phase step-primary
migrate backup --out $d/switch-old.stepq --side old
migrate phase step
migrate backup --out $d/final-old.stepq --side old
migrate cleanup --backup $d/final-old.stepq
WALK
}

# The id of the node on port $1.
node_id() { redis-cli -p "$1" cluster myid; }
# The ports of the live replicas of the master on port $1 that finished
# their sync (a replica still in its first sync has none of the data).
replicas_of() {
    local p
    for p in $(rc1 cluster nodes | awk -v id="$(node_id "$1")" '$4 == id && $3 ~ /slave/ && $3 !~ /fail/ {
        sub(/@.*/, "", $2); sub(/.*:/, "", $2); print $2 }'); do
        redis-cli -p "$p" info replication | tr -d '\r' | grep -q '^master_sync_in_progress:0' &&
            redis-cli -p "$p" info replication | tr -d '\r' | grep -q '^master_link_status:up' && echo "$p"
    done
}
# victim_pick: "MASTER REPLICA", a master with a replica in sync, the URL's
# node last (a process started while the master is down finds the cluster
# through the URL); nothing when no master has one.
victim_pick() {
    local m r url=${CLUSTER_URL##*:}
    for m in $(masters | grep -vx "$url") $(masters | grep -x "$url"); do
        r=$(replicas_of "$m" | head -1)
        [ -n "$r" ] && { echo "$m $r"; return 0; }
    done
    return 1
}
# back_as_replica PORT: the node a test killed starts again and must come
# back as a replica, the cluster whole (a node that did not would leave a
# master without a replica: the next failover could not happen).
back_as_replica() {
    "$(dirname "${BASH_SOURCE[0]}")/cluster.sh" restart "$CLUSTER_DIR" "$1" || return 1
    for _ in $(seq 1 100); do redis-cli -p "$1" role 2>/dev/null | head -1 | grep -q slave && break; sleep 0.1; done
    redis-cli -p "$1" role | head -1 | grep -q slave && wait_cluster_ok
}
# heal: every node of the cluster runs (a test that failed between killing
# a node and starting it again leaves it down) and the cluster is ok.
heal() {
    local p
    for p in $CLUSTER_PORTS; do
        redis-cli -p "$p" ping >/dev/null 2>&1 || "$(dirname "${BASH_SOURCE[0]}")/cluster.sh" restart "$CLUSTER_DIR" "$p" || return 1
    done
    wait_cluster_ok
}
# open_move SLOT FROM TO [KEYS...]: the slot MIGRATING on FROM and IMPORTING
# on TO, and only KEYS moved: a reshard caught between two MIGRATE batches
# (move_slot finishes it).
open_move() {
    local s=$1 f=$2 t=$3
    shift 3
    redis-cli -p "$t" cluster setslot "$s" importing "$(node_id "$f")" >/dev/null
    redis-cli -p "$f" cluster setslot "$s" migrating "$(node_id "$t")" >/dev/null
    [ $# = 0 ] || redis-cli -p "$f" migrate 127.0.0.1 "$t" "" 0 20000 keys "$@" >/dev/null
}
# move_slot SLOT FROM TO [BATCH] [PAUSE]: a reshard of one slot by hand, as
# redis-cli --cluster reshard does it, slowly (BATCH keys a MIGRATE, PAUSE s
# between), so that a test can act while the slot is half moved.
move_slot() {
    local s=$1 from=$2 to=$3 batch=${4:-20} pause=${5:-0.05} fid tid p
    fid=$(node_id "$from") tid=$(node_id "$to")
    redis-cli -p "$to" cluster setslot "$s" importing "$fid" >/dev/null
    redis-cli -p "$from" cluster setslot "$s" migrating "$tid" >/dev/null
    while :; do
        mapfile -t keys < <(redis-cli -p "$from" cluster getkeysinslot "$s" "$batch" | grep .)
        [ ${#keys[@]} = 0 ] && break
        redis-cli -p "$from" migrate 127.0.0.1 "$to" "" 0 5000 keys "${keys[@]}" >/dev/null
        sleep "$pause"
    done
    for p in $to $from $(masters); do redis-cli -p "$p" cluster setslot "$s" node "$tid" >/dev/null 2>&1; done
}
