#!/usr/bin/env bash
# tests/chaos/step.sh DIR - the command the chaos workers run for each step.
#
# It proves "never run twice at the same time" without trusting stepq: each
# run takes an exclusive flock(2) on DIR/locks/ID for as long as it lives.
# The kernel drops the lock the instant the process dies (even by SIGKILL),
# so a run that finds the lock taken overlaps a live run of the same step:
# it appends "overlap ID PID TIME" to DIR/overlaps. Every run also appends
# "start ID PID TIME ATTEMPT" and, when it gets to its end, "end ID PID TIME
# ok|fail" to DIR/runs.log (TIME in microseconds, EPOCHREALTIME).
# A payload containing "fail":true makes every attempt exit 7, so that step
# ends failed by policy (attempts == max_attempts).
dir=$1
payload=$(cat)
now() { echo "${EPOCHREALTIME/./}"; }
exec 9>"$dir/locks/$STEPQ_STEP_ID"
if ! flock -n 9; then
    echo "overlap $STEPQ_STEP_ID $$ $(now)" >>"$dir/overlaps"
fi
echo "start $STEPQ_STEP_ID $$ $(now) $STEPQ_ATTEMPT" >>"$dir/runs.log"
echo "progress 50 working"
# The sleep must not hold the lock: only this shell is the run (the worker
# kills it with its parent; a grandchild would outlive it).
sleep "0.$(printf '%03d' $((RANDOM % 300 + 50)))" 9>&-
case $payload in
*'"fail":true'*)
    echo "end $STEPQ_STEP_ID $$ $(now) fail" >>"$dir/runs.log"
    echo "failing on purpose"
    exit 7
    ;;
esac
echo "end $STEPQ_STEP_ID $$ $(now) ok" >>"$dir/runs.log"
printf '{"ok":true,"attempt":%s}\n' "$STEPQ_ATTEMPT"
