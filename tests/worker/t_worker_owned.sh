#!/usr/bin/env bash
# A worker id is owned (issue 10, finding 6): a second `stepq worker` with
# the same --id is refused while the first lives (exit 4, and it leaves the
# first alone: before, its exit deregistered the id and the first killed its
# running step as "reaped"). A worker that stalled past its ttl loses the id
# to a newcomer, notices at its next heartbeat and stops (exit 4) without
# releasing the newcomer's registration.
. "$(dirname "$0")/lib.sh"

cat >"$TMP/step.sh" <<'SH'
#!/usr/bin/env bash
echo "start $STEPQ_STEP_ID $STEPQ_ATTEMPT" >>"$OUT/runs"
sleep "${STEP_SLEEP:-2}"
echo "end $STEPQ_STEP_ID $STEPQ_ATTEMPT" >>"$OUT/runs"
echo '{"ok":1}'
SH
chmod +x "$TMP/step.sh"
export OUT=$TMP

id=$($S submit)
start_worker wdup -- "$TMP/step.sh"
first=$WPID
started() { grep -q "^start $id" "$TMP/runs" 2>/dev/null; }
expect "the first worker runs the step" wait_for 10 started
rc=0
timeout -s KILL 8 $S worker --id wdup --heartbeat-ttl-ms 1000 -- "$TMP/step.sh" 2>"$TMP/second.log" || rc=$?
expect "a second worker with the same id is refused (exit 4)" eq "$rc" 4
expect "and told what to do" grep -q "worker 'wdup' is registered by a live process (host .*, pid $first); pick another --id, or stop that process first" "$TMP/second.log"
expect "the step completes on the first, once" wait_for 10 is_status "$id" completed
expect "in one attempt" eq "$($S get "$id" | field attempts)" 1
expect "the first did not think it was reaped" eq "$(grep -c -e reaped -e 'requeued while' "$TMP/wdup.log" || true)" 0
expect "the first is still registered" eq "$($S workers | jq -r '.[0].pid')" "$first"

# The first stalls past its ttl (SIGSTOP): a newcomer takes the id over.
kill -STOP "$first"
hb_gone() { [ "$(rcli EXISTS worker:wdup:heartbeat)" = 0 ]; }
expect "the stalled worker's heartbeat runs out" wait_for 5 hb_gone
STEP_SLEEP=0 start_worker wdup2 --id wdup -- "$TMP/step.sh"
second=$WPID
owned_by() { [ "$($S workers | jq -r '.[0].pid')" = "$1" ]; }
expect "the newcomer takes the id" wait_for 5 owned_by "$second"
kill -CONT "$first"
rc=0
stopped() { dead "$first"; }
expect "the stalled one notices and stops" wait_for 10 stopped
wait "$first" || rc=$?
expect "with exit 4" eq "$rc" 4
expect "saying why" grep -q "registered by another process now" "$TMP/wdup.log"
expect "the newcomer keeps the id" owned_by "$second"
id2=$($S submit)
expect "and runs steps" wait_for 10 is_status "$id2" completed
kill -TERM "$second"; wait "$second" || true
expect "its own exit deregisters" eq "$($S workers)" "[]"
finish
