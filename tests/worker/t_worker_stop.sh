#!/usr/bin/env bash
# Stopping children: the timeout kills the command and its grandchild and
# fails the attempt; SIGTERM drains (the running step completes, nothing new
# is claimed, the worker deregisters and exits 0).
. "$(dirname "$0")/lib.sh"

# The command and its grandchild both ignore SIGTERM: only the SIGKILL that
# follows reaches them, and it must reach the whole process group.
to=$($S submit --max-attempts 1)
start_worker w41 --timeout 0.5 -- bash -c 'trap "" TERM; sleep 60 & echo $! >"$0"; wait' "$TMP/grandchild"
expect "timeout fails the attempt" wait_for 10 is_status "$to" failed
expect "and says so" eq "$($S get "$to" | field error)" "timed out after 0.5 s; the command was killed"
gc=$(cat "$TMP/grandchild")
gone() { dead "$gc"; }
expect "the grandchild was killed too" wait_for 2 gone
kill -TERM "$WPID"; wait "$WPID" || true

# SIGTERM drain: one step runs (2 s), two wait.
cat >"$TMP/slow.sh" <<'SH'
#!/usr/bin/env bash
echo "$STEPQ_STEP_ID" >>"$OUT/started"
sleep 2
echo '{"done":true}'
SH
chmod +x "$TMP/slow.sh"
export OUT=$TMP
a=$($S submit --priority 9)
b=$($S submit)
c=$($S submit)
start_worker w41b --grace 20 -- "$TMP/slow.sh"
expect "the first step starts" wait_for 5 is_status "$a" active
kill -TERM "$WPID"
t0=$SECONDS
wait "$WPID"; rc=$?
expect "exit 0 after the drain" eq "$rc" 0
expect "the running step completed" eq "$(status_of "$a")" completed
expect "no new claims while draining" eq "$(status_of "$b")/$(status_of "$c")/$(wc -l <"$TMP/started")" "pending/pending/1"
expect "deregistered" eq "$($S workers)" "[]"
expect "gone from the live processes" eq "$($S migrate status --json | field processes)" "[]"
expect "the drain took less than the grace" test $((SECONDS - t0)) -lt 15

# The grace runs out: the step is stopped and requeued, exit 0.
start_worker w41c --grace 0.3 -- sleep 30
expect "a step starts" wait_for 5 is_status "$b" active
kill -TERM "$WPID"
wait "$WPID"; rc=$?
expect "exit 0 after the grace ran out" eq "$rc" 0
expect "its step went back to pending" eq "$(status_of "$b")" pending
finish
