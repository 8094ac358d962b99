#!/usr/bin/env bash
# scripts/demo-step.sh LOG - the command the main job's workers run for each
# step: reads the payload, reports progress, sleeps a little, prints a JSON
# result. It appends "start|end ID PID MICROSECONDS" to LOG, so that the main
# job can prove that no two attempts of one step ran at the same time.
log=$1
payload=$(cat)
now() { local t=${EPOCHREALTIME/./}; echo "$t"; }
echo "start $STEPQ_STEP_ID $$ $(now)" >>"$log"
echo "progress 50 working"
sleep "0.0$((RANDOM % 8 + 2))"
echo "end $STEPQ_STEP_ID $$ $(now)" >>"$log"
printf '{"ok":true,"attempt":%s,"payload_bytes":%s}\n' "$STEPQ_ATTEMPT" "${#payload}"
