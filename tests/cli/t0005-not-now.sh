#!/usr/bin/env bash
# "Not now" replies (BUSY while a long script runs, LOADING after a restart)
# are connection trouble, not refusals: the call fails as an I/O error with
# a clear text, the next call goes through, and a worker retries the report
# of a step that ended meanwhile instead of dropping it. Against a server of
# its own (a busy server would stall every other test).
. "$(dirname "$0")/lib.sh"
S=$STEPQ
own_server notnow --busy-reply-threshold 20
export REDIS_URL
busy() { # busy SECONDS: a read-only script that holds the server; returns
    # once the server answers BUSY (under load the script may start late:
    # a fixed sleep let the call under test run before it, or after it)
    redis-cli -s "$REDIS_SOCK" EVAL "local t = redis.call('TIME') local s = t[1] * 1e6 + t[2]
        repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > $1 * 1e6 return 1" 0 >/dev/null &
    for _ in $(seq 100); do
        redis-cli -s "$REDIS_SOCK" PING 2>&1 | grep -q BUSY && return 0
        sleep 0.02
    done
}

id=$($S submit)
expect_ok "BUSY: an I/O error that says to retry, then the call goes through" '
    busy 3
    out=$($S get "$id" 2>&1) && exit 9
    echo "$out" | grep -q "redis cannot answer now (BUSY" || { echo "$out"; exit 8; }
    wait
    [ "$($S get "$id" | python3 -c "import json,sys; print(json.load(sys.stdin)[\"status\"])")" = pending ]'

# A step whose command ends while the server is busy is reported once the
# server is free again (it was dropped as refused before).
cat >"$srv/job.sh" <<SH
#!/usr/bin/env bash
while [ ! -e "$srv/go" ]; do sleep 0.02; done
echo '{"ok":true}'
SH
chmod +x "$srv/job.sh"
$S worker --id nn1 --heartbeat-ttl-ms 10000 -- "$srv/job.sh" 2>"$srv/worker.log" & wpid=$!
expect_ok "the worker runs the step" '
    for _ in $(seq 50); do [ "$(redis-cli -s "$REDIS_SOCK" HGET "job:$id" status)" = active ] && exit 0; sleep 0.1; done; exit 1'
expect_ok "a step that ends while redis is busy is completed once it is free" '
    busy 2
    touch "$srv/go"
    wait
    for _ in $(seq 50); do [ "$(redis-cli -s "$REDIS_SOCK" HGET "job:$id" status)" = completed ] && exit 0; sleep 0.1; done
    cat "$srv/worker.log"; exit 1'
kill -TERM $wpid; wait $wpid || true
finish
