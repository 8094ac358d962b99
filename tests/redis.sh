#!/usr/bin/env bash
# tests/redis.sh - a private redis-server for tests and for `make run`.
#
#   tests/redis.sh start DIR   starts redis-server in DIR (a free port on
#                              127.0.0.1 and DIR/redis.sock, pidfile DIR/redis.pid)
#                              and writes DIR/env with REDIS_URL and REDIS_PORT
#   tests/redis.sh stop DIR    stops it and removes DIR
#
# Extra server options can be passed in REDIS_EXTRA (e.g. "--appendonly yes").
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

free_port() {
    # Ask the kernel for a free port, then hand it to redis.
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}

case "$cmd" in
start)
    command -v redis-server >/dev/null || { echo "redis-server not found; run scripts/bootstrap.sh" >&2; exit 1; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
        exit 0 # already running
    fi
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        # shellcheck disable=SC2086
        redis-server --port "$port" --bind 127.0.0.1 --unixsocket "$dir/redis.sock" \
            --unixsocketperm 700 --dir "$dir" --pidfile "$dir/redis.pid" --daemonize yes \
            --save '' --appendonly no --databases 128 --logfile "$dir/redis.log" ${REDIS_EXTRA:-} >/dev/null
        for _ in $(seq 1 100); do
            # A server with a password answers NOAUTH: up all the same.
            if [ -S "$dir/redis.sock" ] && redis-cli -s "$dir/redis.sock" ping 2>&1 | grep -qE 'PONG|NOAUTH'; then
                printf 'REDIS_URL=unix://%s/redis.sock\nREDIS_PORT=%s\nREDIS_SOCK=%s/redis.sock\n' \
                    "$dir" "$port" "$dir" >"$dir/env"
                exit 0
            fi
            sleep 0.05
        done
        echo "redis-server did not start on port $port (attempt $attempt); log:" >&2
        tail -5 "$dir/redis.log" >&2 || true
        # Never leave a half-started daemon behind.
        [ -f "$dir/redis.pid" ] && kill -9 "$(cat "$dir/redis.pid")" 2>/dev/null || true
        rm -f "$dir/redis.pid" "$dir/redis.sock"
    done
    exit 1
    ;;
stop)
    if [ -f "$dir/redis.pid" ]; then
        pid=$(cat "$dir/redis.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
