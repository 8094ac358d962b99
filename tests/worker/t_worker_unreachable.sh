#!/usr/bin/env bash
# A worker stops promptly on SIGTERM while Redis cannot answer (stopped with
# SIGSTOP: connections are accepted and nothing comes back, the slowest way
# for Redis to be away), and the step it held is not lost: it stays active,
# held by the stopped worker, and the reaper requeues it once the worker's
# heartbeat ran out. Without the library's stop flag (stepq_set_stop_flag)
# each call waited out its reply (5 s) and then every reconnection attempt
# (5 s each): the worker had not exited 60 s after SIGTERM; with it, 2 to
# 3 s.
# A private redis-server of its own (it is stopped); database 122 of the
# shared one stays empty.
. "$(dirname "$0")/lib.sh"

"$(dirname "$0")/../redis.sh" start "$TMP/r" >/dev/null
. "$TMP/r/env"
RPID=$(cat "$TMP/r/redis.pid")
resume() { kill -CONT "$RPID" 2>/dev/null || true; }
cleanup_all() { resume; "$(dirname "$0")/../redis.sh" stop "$TMP/r" >/dev/null 2>&1 || true; cleanup; }
trap cleanup_all EXIT
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT
now_ms() { date +%s%3N; }

# stop_timed: SIGTERM to the worker; prints the ms until it exited (or
# "timeout" after 60 s, when it is killed).
stop_timed() {
    local t0=$(now_ms)
    kill -TERM "$WPID"
    if wait_for 60 dead "$WPID"; then
        echo $(($(now_ms) - t0))
    else
        kill -9 "$WPID" 2>/dev/null
        echo timeout
    fi
    wait "$WPID" 2>/dev/null || true
}
under() { [ "$1" != timeout ] && [ "$1" -lt "$2" ] || { echo "  took ${1} ms, want < $2" >&2; return 1; }; }

# The heartbeat ttl is the default's (15 s: one heartbeat every 5 s), as an
# operator's worker has it; lib.sh's 1 s would add a heartbeat try (1 s while
# Redis does not answer) every 333 ms of the drain.
# 1. An idle worker (it claims every 200 ms) whose Redis stopped answering.
start_worker wu1 --heartbeat-ttl-ms 15000 -- true
expect "the worker registered" wait_for 5 eval '[ "$($S workers | jq length)" = 1 ]'
kill -STOP "$RPID"
sleep 0.5 # a claim is in flight now
ms=$(stop_timed)
echo "     idle worker, redis stopped: exit after $ms ms"
expect "an idle worker exits within 6 s of SIGTERM" under "$ms" 6000
resume

# 2. A worker running a step (--grace 1): the grace runs out, the command is
# killed, and the worker cannot hand the step back.
id=$($S submit --max-attempts 3)
start_worker wu2 --heartbeat-ttl-ms 15000 --grace 1 -- sleep 60
expect "the step runs" wait_for 5 is_status "$id" active
kill -STOP "$RPID"
sleep 0.5
ms=$(stop_timed)
echo "     running step, --grace 1, redis stopped: exit after $ms ms"
expect "a busy worker exits within the grace plus 6 s" under "$ms" 7000
resume
# The deregistration the worker wrote before giving up on its reply sits in
# the socket of the stopped server, which runs it once resumed: the step
# is handed back (pending). Had it not reached the server, the step would
# still be held (active) until the reaper requeues it.
st=$(status_of "$id")
echo "     its step after the server resumed: $st"
expect "its step is not lost: held (active) or handed back (pending)" test "$st" = active -o "$st" = pending
# The reaper hands it back once the heartbeat is older than its timeout
# (1 s here, the ttl by default).
sleep 1.2
$S reap --timeout-ms 1000 >/dev/null
expect "after a reaper pass it is pending" eq "$(status_of "$id")" pending
start_worker wu3 -- true
expect "and it runs to its end" wait_for 10 is_status "$id" completed
kill -TERM "$WPID"; wait "$WPID" || true

# 3. Redis gone (the port refuses): the worker exits at once too.
start_worker wu4 -- true
expect "the worker registered" wait_for 5 eval '[ "$($S workers | jq -r ".[].id" | grep -c wu4)" = 1 ]'
"$(dirname "$0")/../redis.sh" stop "$TMP/r" >/dev/null
ms=$(stop_timed)
echo "     idle worker, redis down: exit after $ms ms"
expect "an idle worker exits within 4 s of SIGTERM" under "$ms" 4000
finish
