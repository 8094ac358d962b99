# tests/worker/lib.sh - what the worker tests share. Sourced; expects STEPQ
# and STEPQ_TEST_REDIS from ctest (tests/CMakeLists.txt).
set -euo pipefail
: "${STEPQ:?run through ctest}" "${STEPQ_TEST_REDIS:?run through ctest}"
export REDIS_URL=$STEPQ_TEST_REDIS
unset ENABLE_DUAL_WRITE_STEPS PRIMARY_KEY_PATTERN
S=$STEPQ
TMP=$(mktemp -d /tmp/stepq-wtest.XXXXXX)
PIDS=()
passed=0
failed=0
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

rcli() { redis-cli -s "$REDIS_SOCK" -n "$STEPQ_DB" "$@"; }
[ "$(rcli DBSIZE)" = 0 ] || [ "${STEPQ_TEST_PRIVATE:-}" = 1 ] || { echo "refusing: database not empty" >&2; exit 1; }
rcli FLUSHDB >/dev/null

. "$(dirname "${BASH_SOURCE[0]}")/../own_channels.sh"

field() { jq -r --arg k "$1" 'getpath($k | split(".")) | if type == "object" or type == "array" then tojson else . end'; }
status_of() { $S get "$1" | field status; }

# wait_for SECONDS CMD...: polls CMD every 0.1 s until it succeeds.
wait_for() {
    local end=$((SECONDS + $1)); shift
    until "$@"; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.1
    done
}
# dead PID: the process is gone or a zombie (an orphan whose reaper, PID 1
# of a container, may never wait for it).
dead() { ! kill -0 "$1" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }
is_status() { [ "$(status_of "$1")" = "$2" ]; }

# start_worker NAME ARGS... -- CMD: a worker in the background, log in $TMP/NAME.log
start_worker() {
    local name=$1; shift
    $S worker --id "$name" --heartbeat-ttl-ms 1000 "$@" 2>"$TMP/$name.log" &
    WPID=$!
    PIDS+=("$WPID")
}

expect() { # expect DESCRIPTION CMD...
    local what=$1; shift
    if "$@"; then
        passed=$((passed + 1)); echo "ok   $what"
    else
        failed=$((failed + 1)); echo "FAIL $what"
        for f in "$TMP"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }; done
    fi
}
eq() { [ "$1" = "$2" ] || { echo "  '$1' != '$2'" >&2; return 1; }; }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; }
