#!/usr/bin/env bash
# lib.sh - what the HTTP tests (tests/http/t*.sh) share: the environment, a
# clean database, the test_expect_success-style `expect`, starting `stepq
# serve` on a free port, and curl/JSON helpers. Sourced, not run.
#
# Environment (set by ctest, tests/CMakeLists.txt): STEPQ (the binary),
# STEPQ_TEST_REDIS (URL of this test's database), REDIS_SOCK and STEPQ_DB
# (for redis-cli), STEPQ_TEST_PRIVATE=1 to allow emptying the database.
set -u
: "${STEPQ:?}" "${STEPQ_TEST_REDIS:?}" "${REDIS_SOCK:?}" "${STEPQ_DB:?}"
export REDIS_URL=$STEPQ_TEST_REDIS
unset STEPQ_API_TOKEN ENABLE_DUAL_WRITE_STEPS PRIMARY_KEY_PATTERN STEPQ_NAMESPACE STEPQ_RULES

tmp=$(mktemp -d)
servers=()
cleanup() {
    for p in "${servers[@]}"; do kill -9 "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT

rcli() { redis-cli -s "$REDIS_SOCK" -n "$STEPQ_DB" "$@"; }
if [ "$(rcli DBSIZE)" != 0 ]; then
    [ "${STEPQ_TEST_PRIVATE:-}" = 1 ] || { echo "database $STEPQ_DB is not empty; refusing" >&2; exit 1; }
    rcli FLUSHDB >/dev/null
fi

passed=0 failed=0
# expect NAME COMMAND...: the command must succeed.
expect() {
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
        [ -f "$tmp/body" ] && echo "     body: $(head -c 400 "$tmp/body")"
    fi
}

# start_server LOG [serve args...]: starts serve on a free port; sets url and pid.
start_server() {
    local log=$1
    shift
    "$STEPQ" serve --listen 127.0.0.1:0 "$@" 2>"$log" &
    pid=$!
    servers+=("$pid")
    for _ in $(seq 1 300); do
        port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$log")
        [ -n "$port" ] && break
        sleep 0.05
    done
    url=http://127.0.0.1:$port
}

# req METHOD PATH [curl args...]: prints the status; body in $tmp/body, headers in $tmp/hdr.
# A POST says Content-Type: application/json (serve refuses one that does
# not) unless NO_CT=1.
req() {
    local m=$1 p=$2 ct=()
    shift 2
    [ "$m" = POST ] && [ "${NO_CT:-}" != 1 ] && ct=(-H "Content-Type: application/json")
    curl -s -o "$tmp/body" -D "$tmp/hdr" -w '%{http_code}' -X "$m" "${ct[@]}" "$@" "$url$p"
}
AUTH=(-H "Authorization: Bearer t0ken-for-tests-16b")
CT=(-H "Content-Type: application/json")
# is STATUS WANT
is() { [ "$1" = "$2" ] || { echo "     status $1, want $2" >&2; return 1; }; }
# json PYEXPR: evaluates a Python expression over the body as `j`.
json() { python3 -I -S -c 'import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$tmp/body" "$1"; }
hdr() { grep -qi "^$1" "$tmp/hdr"; }

# finish: the closing line CI reads, and the exit status.
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ]
}
