# tests/cli/lib.sh - a tiny git-style harness for the CLI tests.
#   expect_ok "title" 'commands'        the commands exit 0
#   expect_code N "title" 'commands'    the last command exits N
# Each script ends with `finish`, which prints "N passed, N failed".
set -u
: "${STEPQ:?run through ctest}" "${STEPQ_TEST_REDIS:?run through ctest}"
export REDIS_URL=$STEPQ_TEST_REDIS
passed=0
failed=0
sock=${REDIS_SOCK:-}
db=${STEPQ_DB:-0}
rcli() { redis-cli -s "$sock" -n "$db" "$@"; }

# A private database only: refuse to empty one the harness does not own.
if [ "${STEPQ_TEST_PRIVATE:-}" = 1 ]; then rcli FLUSHDB >/dev/null; elif [ "$(rcli DBSIZE)" != 0 ]; then
    echo "refusing to run: the test database is not empty" >&2
    exit 1
fi

report() {
    if [ "$1" = 0 ]; then
        passed=$((passed + 1))
        echo "ok   $2"
    else
        failed=$((failed + 1))
        echo "FAIL $2"
        sed 's/^/     | /' "$tmpout" >&2
    fi
}
tmpout=$(mktemp)
trap 'rm -f "$tmpout"' EXIT

# own_server NAME [REDIS OPTIONS...]: a redis-server of the test's own (for
# settings a shared server must not get), stopped on exit; its REDIS_URL,
# REDIS_PORT and REDIS_SOCK are set, and its directory is $srv.
own_server() {
    local name=$1
    shift
    srv=$(mktemp -d "/tmp/stepq-$name.XXXXXX")
    trap '"$(dirname "$0")/../redis.sh" stop "$srv"; rm -f "$tmpout"' EXIT
    REDIS_EXTRA="$*" "$(dirname "$0")/../redis.sh" start "$srv" >/dev/null
    . "$srv/env"
}

expect_ok() {
    (set -e; eval "$2") >"$tmpout" 2>&1
    report $? "$1"
}

expect_code() {
    local want=$1 rc
    (eval "$3") >"$tmpout" 2>&1
    rc=$?
    [ "$rc" = "$want" ] || echo "exit code $rc, want $want" >>"$tmpout"
    report $([ "$rc" = "$want" ] && echo 0 || echo 1) "$2"
}

finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ]
}
