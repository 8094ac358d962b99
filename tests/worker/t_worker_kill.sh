#!/usr/bin/env bash
# A worker killed with SIGKILL mid-step: another worker's reaper requeues
# the step, and it completes exactly once (the dead worker's child does not
# run on beside the new attempt).
. "$(dirname "$0")/lib.sh"

cat >"$TMP/step.sh" <<'SH'
#!/usr/bin/env bash
echo "start $STEPQ_STEP_ID $$ $STEPQ_ATTEMPT" >>"$OUT/runs"
sleep 1.5
echo "end $STEPQ_STEP_ID $$ $STEPQ_ATTEMPT" >>"$OUT/runs"
echo '{"ok":1}'
SH
chmod +x "$TMP/step.sh"
export OUT=$TMP
id=$($S submit)
start_worker victim -- "$TMP/step.sh"
victim=$WPID
started() { grep -q "^start $id" "$TMP/runs" 2>/dev/null; }
expect "the victim starts the step" wait_for 10 started
kill -9 "$victim"
wait "$victim" 2>/dev/null || true
vchild=$(awk '/^start/ {print $3; exit}' "$TMP/runs")
gone() { dead "$vchild"; }
expect "the victim's command died with it" wait_for 3 gone
start_worker rescuer -- "$TMP/step.sh"
expect "the step completes on the rescuer" wait_for 15 is_status "$id" completed
expect "the rescuer's reaper requeued it" grep -q "requeued 1 step" "$TMP/rescuer.log"
expect "two attempts started" eq "$(grep -c "^start $id" "$TMP/runs")" 2
expect "exactly one ran to its end" eq "$(grep -c "^end $id" "$TMP/runs")" 1
expect "the one that ended was the second attempt" grep -q "^end $id [0-9]* 2$" "$TMP/runs"
expect "the step is in the completed set once" eq "$(rcli SISMEMBER jobs:completed "$id")" 1
expect "the dead worker is gone" eq "$($S workers | grep -c victim || true)" 0
kill -TERM "$WPID"; wait "$WPID" || true
finish
