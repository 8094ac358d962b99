#!/usr/bin/env bash
# tests/cluster/cluster.sh - a private Redis Cluster for tests: 3 masters and
# 3 replicas, each a redis-server in DIR/node-PORT, on 127.0.0.1 only.
#
#   cluster.sh start DIR   starts the six nodes on six consecutive free ports
#                          (from STEPQ_CLUSTER_PORT, default 47000, moved up
#                          by 10 while any is taken), joins them with
#                          `redis-cli --cluster create --cluster-replicas 1`,
#                          waits for cluster_state:ok on every node and
#                          every replica's first sync, writes
#                          DIR/env (CLUSTER_PORTS, CLUSTER_URL)
#   cluster.sh restart DIR PORT  starts the node of PORT again (after a test
#                          killed it; waits while the port is taken, up to
#                          90 s, then for its sync); its nodes.conf makes it
#                          rejoin
#   cluster.sh stop DIR    stops every node (kill, then kill -9) and removes DIR
#
# cluster-node-timeout is 1000 ms so that a killed master's replica is
# promoted within about two seconds (the failover test).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

# Both the port and its bus port (+10000) bound as redis-server binds them,
# with SO_REUSEADDR: without it a bus port in the ephemeral range was taken
# for "in use" by any outgoing connection's TIME_WAIT there, and on a busy
# machine every candidate failed.
port_free() {
    python3 -c 'import socket,sys
for p in sys.argv[1:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(p)))' "$1" "$(( $1 + 10000 ))" 2>/dev/null
}

start_node() { # port
    local p=$1 d="$dir/node-$1"
    mkdir -p "$d"
    # The daemon must not inherit the caller's pipes (a test's output): a
    # reader waiting for their end would wait for the daemon's.
    (
        for fd in /proc/$BASHPID/fd/*; do
            n=${fd##*/}
            [ "$n" -gt 2 ] 2>/dev/null && eval "exec $n>&-"
        done
        exec redis-server --port "$p" --bind 127.0.0.1 --dir "$d" --pidfile "$d/redis.pid" \
        --daemonize yes --logfile "$d/redis.log" --save '' --appendonly no \
        --cluster-enabled yes --cluster-config-file "$d/nodes.conf" \
        --cluster-node-timeout "${STEPQ_CLUSTER_NODE_TIMEOUT:-1000}" \
        --cluster-replica-validity-factor 0 ${CLUSTER_EXTRA:-} </dev/null >/dev/null 2>&1
    )
}

# Every replica has finished its first sync (INFO replication: the link up,
# no sync in progress). cluster_state:ok comes before that: a replica waits
# repl-diskless-sync-delay (5 s) before its full sync, and a failover test
# run first on a fresh cluster once promoted a replica that had none of the
# data yet (cluster-replica-validity-factor 0 lets any replica take over).
wait_synced() {
    local p info
    for _ in $(seq 1 600); do
        local ok=1
        for p in $CLUSTER_PORTS; do
            info=$(redis-cli -p "$p" info replication 2>/dev/null | tr -d '\r') || continue
            echo "$info" | grep -q '^role:slave' || continue
            echo "$info" | grep -q '^master_link_status:up' &&
                echo "$info" | grep -q '^master_sync_in_progress:0' || { ok=0; break; }
        done
        [ $ok = 1 ] && return 0
        sleep 0.1
    done
    return 1
}

wait_ok() { # every port answers cluster_state:ok and agrees on the slots
    for _ in $(seq 1 300); do
        local ok=1
        for p in $CLUSTER_PORTS; do
            redis-cli -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || { ok=0; break; }
        done
        [ $ok = 1 ] && return 0
        sleep 0.1
    done
    return 1
}

case "$cmd" in
start)
    command -v redis-server >/dev/null || { echo "redis-server not found; run scripts/bootstrap.sh" >&2; exit 1; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    base=${STEPQ_CLUSTER_PORT:-47000}
    for _ in $(seq 1 40); do
        all=1
        for i in 0 1 2 3 4 5; do port_free $((base + i)) || { all=0; break; }; done
        [ $all = 1 ] && break
        base=$((base + 10))
    done
    [ $all = 1 ] || { echo "no six free ports from ${STEPQ_CLUSTER_PORT:-47000}" >&2; exit 1; }
    CLUSTER_PORTS=""
    for i in 0 1 2 3 4 5; do
        start_node $((base + i))
        CLUSTER_PORTS="$CLUSTER_PORTS $((base + i))"
    done
    CLUSTER_PORTS=${CLUSTER_PORTS# }
    for p in $CLUSTER_PORTS; do
        for _ in $(seq 1 100); do redis-cli -p "$p" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
    done
    # shellcheck disable=SC2046
    redis-cli --cluster create $(for p in $CLUSTER_PORTS; do printf '127.0.0.1:%s ' "$p"; done) \
        --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 ||
        { echo "redis-cli --cluster create failed:" >&2; tail -20 "$dir/create.log" >&2; "$0" stop "$dir"; exit 1; }
    if ! wait_ok || ! wait_synced; then
        echo "the cluster did not reach cluster_state:ok with every replica in sync" >&2
        "$0" stop "$dir"
        exit 1
    fi
    printf 'CLUSTER_PORTS="%s"\nCLUSTER_URL=redis://127.0.0.1:%s\nCLUSTER_DIR=%s\n' \
        "$CLUSTER_PORTS" "$base" "$dir" >"$dir/env"
    ;;
restart)
    # Until the node answers. Its port is in the ephemeral range: while it
    # was down an outgoing connection may have taken it as its local port,
    # and a new listener fails with "Address already in use" until that
    # connection (or its TIME_WAIT, 60 s) is gone. Once, the node then never
    # came back, and the next failover found a master without a replica.
    dir=$(cd "$dir" && pwd)
    p=${3:?usage: $0 restart DIR PORT}
    for _ in $(seq 1 90); do
        if port_free "$p"; then
            start_node "$p"
            for _ in $(seq 1 40); do
                if redis-cli -p "$p" ping 2>/dev/null | grep -q PONG; then
                    CLUSTER_PORTS=$p
                    wait_synced && exit 0
                    echo "node $p started but did not finish its sync" >&2
                    exit 1
                fi
                sleep 0.05
            done
        fi
        sleep 1
    done
    echo "node $p did not start again in 90 s (port taken?); see $dir/node-$p/redis.log" >&2
    exit 1
    ;;
stop)
    # The pids are read once: a node removes its pid file as it exits, so a
    # second read could find it gone.
    pids=()
    for pf in "$dir"/node-*/redis.pid; do
        pid=$(cat "$pf" 2>/dev/null) || continue
        pids+=("$pid")
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
