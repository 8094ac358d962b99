#!/usr/bin/env bash
# Bad input: a clear error, exit 2 (usage) or 4 (refused), and nothing changes.
. "$(dirname "$0")/lib.sh"
S=$STEPQ

expect_ok "--help on every command" '
    $S --help | grep -q "commands:"
    for c in submit get list claim progress complete fail cancel events workers reap migrate; do
        $S $c --help >/dev/null || { echo "no help for $c"; exit 1; }
    done
    $S migrate phase --help | grep -q "one step forward or"
    $S migrate status --help >/dev/null'

expect_code 2 "unknown command" '$S frobnicate'
expect_code 2 "malformed URL says what is wrong" '
    out=$($S -u "redis://h:99999" get x 2>&1); echo "$out"; echo "$out" | grep -q "port must be a number"; $S -u "redis://h:99999" get x'
expect_code 2 "URL with a password is never echoed" '
    out=$($S -u "redis://u:hunter2@h:0" get x 2>&1); ! echo "$out" | grep -q hunter2 || exit 9; $S -u "redis://u:hunter2@h:0" get x'
expect_code 2 "bad priority" '$S submit --priority -4'
expect_code 2 "priority not a number" '$S submit --priority high'
expect_code 2 "invalid JSON payload says where" '
    out=$($S submit --payload "{\"a\":" 2>&1); echo "$out" | grep -q "not valid JSON"; $S submit --payload "{\"a\":"'
expect_code 2 "unknown state" '$S list done'
expect_code 2 "unknown phase" '
    out=$($S migrate phase dualread 2>&1); echo "$out" | grep -q "expected one of: job, dual-write"; $S migrate phase dualread'
expect_code 4 "a move of two steps is refused" '$S migrate phase dual-read'
expect_ok "refused moves changed nothing" '
    [ "$($S migrate phase)" = job ]
    [ "$(rcli DBSIZE)" = 0 ]'
expect_code 2 "bad rules file names the line" '
    printf "step hash job:{id}\nx tree a b\n" >"$tmpout.rules"
    out=$($S --rules "$tmpout.rules" get x 2>&1); rm -f "$tmpout.rules"; echo "$out" | grep -q "line 1: expected 4 fields"
    printf "x\n" >"$tmpout.rules"; $S --rules "$tmpout.rules" get x; rc=$?; rm -f "$tmpout.rules"; exit $rc'
expect_code 1 "no server: a clear error, exit 1" '$S -u redis://127.0.0.1:1 get x'
expect_code 2 "ENABLE_DUAL_WRITE_STEPS must be a boolean" 'ENABLE_DUAL_WRITE_STEPS=maybe $S get x'

finish
