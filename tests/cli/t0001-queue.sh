#!/usr/bin/env bash
# The queue commands' contract: output shapes and exit codes.
. "$(dirname "$0")/lib.sh"
S=$STEPQ
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

expect_ok "submit prints the id alone" '
    id=$($S submit --type demo --priority 3 --payload "{\"a\":1}")
    [[ "$id" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]]
    echo "$id" >"$tmpout.id"'
id=$(cat "$tmpout.id"); rm -f "$tmpout.id"

expect_ok "get prints every field, payload as JSON, progress" '
    out=$($S get "$id")
    [ "$(echo "$out" | field status)" = pending ]
    [ "$(echo "$out" | field priority)" = 3 ]
    echo "$out" | python3 -c "import json,sys; o=json.load(sys.stdin); assert o[\"payload\"]=={\"a\":1}; assert o[\"progress\"]=={}"'

expect_ok "list pending shows it" '$S list pending | grep -qx "$id"'

expect_ok "claim prints the step with its token; progress and complete take it" '
    out=$($S claim --worker w1)
    [ "$(echo "$out" | field id)" = "$id" ]
    tok=$(echo "$out" | field token)
    $S progress "$id" --token "$tok" --percent 30 --message "a third"
    $S complete "$id" --token "$tok" --result done
    [ "$($S get "$id" | field status)" = completed ]'

expect_code 3 "claim with nothing to claim exits 3" '$S claim --worker w1'
expect_code 3 "get of a missing step exits 3" '$S get nosuchstep'
expect_code 4 "complete with a stale token exits 4" '$S complete "$id" --token deadbeef'
expect_code 4 "cancel of an ended step exits 4" '$S cancel "$id"'

expect_ok "fail retries, then fails for good" '
    id2=$($S submit --max-attempts 2)
    tok=$($S claim --worker w1 | field token)
    [ "$($S fail "$id2" --token "$tok" --error boom)" = retry ]
    tok=$($S claim --worker w1 | field token)
    [ "$($S fail "$id2" --token "$tok" --error boom)" = failed ]
    $S list failed | grep -qx "$id2"'

expect_ok "capabilities: a step needing gpu waits for a gpu worker" '
    id3=$($S submit --require gpu)
    ! $S claim --worker cpu1
    [ "$($S claim --worker g1 --capability gpu | field id)" = "$id3" ]'

expect_ok "workers and reap" '
    $S workers | python3 -c "import json,sys; json.load(sys.stdin)"
    $S reap --timeout-ms 60000 | grep -q "^{\"requeued\":[0-9]*,\"stale\":[0-9]*,"'

expect_ok "events names the channels of the phase" '
    [ "$($S events)" = "[\"job_events\"]" ]'

# Its own lifecycle channels, so that other tests' steps do not count; the
# follower also hears worker_events, which every database shares, so it is
# not stopped by a count but once both steps were seen.
. "$(dirname "$0")/../own_channels.sh"
expect_ok "events --follow prints an event once per id in a dual phase" '
    own_channels t0001 "$tmpout.rules"
    $S migrate phase dual-write >/dev/null
    ($S events --follow >"$tmpout.ev") & pid=$!
    for _ in $(seq 50); do [ "$(redis-cli -s "$sock" PUBSUB NUMSUB t0001_step_events | tail -1)" = 1 ] && break; sleep 0.1; done
    a=$($S submit); b=$($S submit)
    for _ in $(seq 50); do grep -q "$b" "$tmpout.ev" && break; sleep 0.1; done
    kill $pid; wait $pid || true
    [ "$(grep -c "\"step\":\"$a\"" "$tmpout.ev")" = 1 ]
    [ "$(grep -c "\"step\":\"$b\"" "$tmpout.ev")" = 1 ]
    rm -f "$tmpout.ev"
    $S migrate phase job >/dev/null
    rm -f "$tmpout.rules"'

finish
