#!/usr/bin/env bash
# Bad input, the rows of docs/bad-input.md that no other test proves: each
# gets its exit code and an error that quotes the subject and says what to
# do, and nothing changes.
. "$(dirname "$0")/lib.sh"
S=$STEPQ
# has TEXT CMD...: CMD's output holds TEXT; then exit with CMD's code.
has() {
    local text=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    echo "$out"
    grep -qF -- "$text" <<<"$out" || { echo "missing: $text"; return 99; }
    return $rc
}

# --- CLI flags and arguments ------------------------------------------------
expect_code 2 "unknown option names it" 'has "unrecognized option '"'"'--bogus'"'"'" $S submit --bogus'
expect_code 2 "progress percent out of range" \
    'has "invalid percent '"'"'101'"'"'; use a whole number from 0 to 100" $S progress x --token t --percent 101'
expect_code 2 "claim without --worker" 'has "--worker is required" $S claim'
expect_code 2 "get without an id" 'has "expected one step id" $S get'
expect_code 2 "a step id the key map reads as another key" 'has "invalid step id '"'"'a:progress'"'"': the key map reads its record'"'"'s name as rule '"'"'progress'"'"'" $S get a:progress'
expect_code 3 "a step id with a colon is an id (a legacy one)" 'has "step '"'"'a:b'"'"' does not exist" $S get a:b'
expect_code 2 "a worker id with a space" \
    'has "invalid worker id '"'"'w 1'"'"'; use 1 to 63" $S claim --worker "w 1"'
expect_code 2 "a capability with a comma-space" 'has "invalid requires '"'"'gpu, x86'"'"'; use a comma-separated list" $S submit --require "gpu, x86"'
expect_code 2 "max attempts 0" 'has "invalid max attempts '"'"'0'"'"'; use a whole number from 1 to 1000" $S submit --max-attempts 0'
expect_code 2 "a type with a colon" 'has "invalid type id '"'"'a:b'"'"'; use 1 to 63 characters" $S submit --type a:b'
expect_code 2 "unknown migrate subcommand" 'has "unknown migrate subcommand '"'"'frob'"'"'" $S migrate frob'
expect_code 2 "migrate backup --side left" 'has "unknown side '"'"'left'"'"'; expected old or new" $S migrate backup --out /dev/null --side left'
expect_code 2 "migrate backfill --rate -1" 'has "invalid rate '"'"'-1'"'"'" $S migrate backfill --rate -1'
expect_code 2 "serve --listen without a port" 'STEPQ_API_TOKEN=x has "invalid --listen '"'"'nope'"'"'; use ADDR:PORT" $S serve --listen nope'
expect_code 2 "serve without a token" 'has "STEPQ_API_TOKEN" $S serve --listen 127.0.0.1:0'
expect_code 2 "worker without a command" 'has "expected the command to run after '"'"'--'"'"'" $S worker'
expect_code 2 "worker timeout not a number" 'has "invalid timeout '"'"'soon'"'"'" $S worker --timeout soon -- true'

expect_code 4 "a move to the phase it is in" 'has "the phase is already '"'"'job'"'"'; nothing to do" $S migrate phase job'

# --- environment --------------------------------------------------------------
expect_code 2 "PRIMARY_KEY_PATTERN must be job or step" \
    'PRIMARY_KEY_PATTERN=jobs has "PRIMARY_KEY_PATTERN='"'"'jobs'"'"' is unknown; expected job or step" $S get x'
expect_code 2 "a namespace with a space" \
    'STEPQ_NAMESPACE="a b" has "namespace '"'"'a b'"'"' holds a space or a glob character; use one" $S get x'
expect_code 2 "a rules file that does not exist" \
    'STEPQ_RULES=/nonexistent/rules has "cannot open rules file '"'"'/nonexistent/rules'"'"'" $S get x'
expect_code 2 "REDIS_URL with an unknown scheme" 'REDIS_URL=http://h:1 has "malformed Redis URL: unknown scheme; expected redis://" $S get x'

# --- data ---------------------------------------------------------------------
expect_code 3 "a step that does not exist" 'has "step '"'"'nope'"'"' does not exist" $S get nope'
expect_code 2 "a progress message over 4096 bytes" '
    id=$($S submit); tok=$($S claim --worker w1 | python3 -I -S -c "import json,sys; print(json.loads(sys.stdin.readline())[\"token\"])")
    has "progress message is longer than 4096 bytes; shorten it" $S progress "$id" --token "$tok" --percent 5 --message "$(head -c 5000 /dev/zero | tr "\0" m)"'
expect_code 4 "a stale claim token" '
    id=$($S submit); $S claim --worker w2 >/dev/null
    has "is not held with this token" $S complete "$id" --token nottheone'
# Found by fuzz_step_object: a field that is not UTF-8 made `stepq get` say
# "out of memory"; the bad byte now reads as U+FFFD.
expect_ok "a step with a non-UTF-8 field still reads" '
    id=$($S submit --type utf); rcli HSET "job:$id" note "$(printf "caf\351")" >/dev/null
    $S get "$id" | grep -q "caf\\\\ufffd\|caf�"'
expect_code 2 "a backup file that is not one" '
    printf "not a backup" >"$tmpout.bk"; has "not a stepq backup" $S migrate restore "$tmpout.bk"; rc=$?; rm -f "$tmpout.bk"; exit $rc'
expect_code 3 "a backup file that does not exist" 'has "cannot open backup" $S migrate restore /nonexistent.bk'

# --- the worker's command -----------------------------------------------------
expect_ok "a command that does not exist fails the attempt, saying why" '
    id=$($S submit --type nocmd --max-attempts 1)
    $S worker --id wx --timeout 5 -- /nonexistent/cmd >/dev/null 2>&1 & w=$!
    for _ in $(seq 1 100); do [ -n "$($S list failed | grep "$id")" ] && break; sleep 0.1; done
    kill -TERM $w; wait $w
    $S get "$id" | grep -q "No such file or directory"'

finish
