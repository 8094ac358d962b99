#!/usr/bin/env bash
# The worker acknowledges the steps that ended together in one call
# (stepq_complete_many), and each of them is completed once. The steps'
# events tell: every event of one script call shares the event id base (the
# part before the dot), so completions acknowledged together share it.
. "$(dirname "$0")/lib.sh"

own_channels t44 "$TMP/rules"

redis-cli -s "$REDIS_SOCK" SUBSCRIBE t44_job_events >"$TMP/events.out" &
PIDS+=("$!")
subscribed() { [ "$(redis-cli -s "$REDIS_SOCK" PUBSUB NUMSUB t44_job_events | tail -1)" = 1 ]; }
expect "listening to the test's channel" wait_for 5 subscribed

# Every command waits for $TMP/go, so that all of them end together.
cat >"$TMP/job.sh" <<'SH'
#!/usr/bin/env bash
while [ ! -e "$GO" ]; do sleep 0.02; done
echo '{"done":true}'
SH
chmod +x "$TMP/job.sh"
export GO=$TMP/go
ids=()
for _ in $(seq 1 12); do ids+=("$($S submit)"); done
start_worker w44 --concurrency 12 -- "$TMP/job.sh"
running() { [ "$($S list active | wc -l)" = 12 ]; }
expect "all 12 steps run at once" wait_for 10 running

# Freeze the worker while its commands end, so that it finds all of them
# ended at its next look: a runner that acknowledged one by one would
# still make 12 calls.
kill -STOP "$WPID"
touch "$GO"
ended() { [ "$(ps -o stat= --ppid "$WPID" | grep -vc Z)" = 0 ]; }
expect "the commands end while the worker is frozen" wait_for 10 ended
kill -CONT "$WPID"
all_completed() { for id in "${ids[@]}"; do is_status "$id" completed || return 1; done; }
expect "all 12 steps complete" wait_for 10 all_completed
expect "each with its command's result" eq "$($S get "${ids[0]}" | field result)" '{"done":true}'

# Completions per event id base (one base per script call).
completed_events() { grep -h '"type":"completed"' "$TMP/events.out" || true; }
wait_for 5 bash -c "[ \$(grep -c '\"type\":\"completed\"' '$TMP/events.out') -ge 12 ]" || true
calls=$(completed_events | jq -r '.id | split(".")[0]' | sort -u | wc -l)
events=$(completed_events | wc -l)
echo "  12 completions arrived as $events event(s) from $calls call(s)"
expect "one event per step: none completed twice" eq "$events" 12
expect "acknowledged in fewer calls than steps (batched)" [ "$calls" -lt 12 ]
expect "worker log shows each step completed" eq "$(grep -c 'completed$' "$TMP/w44.log")" 12
kill -TERM "$WPID"
wait "$WPID"; rc=$?
expect "SIGTERM when idle: exit 0" eq "$rc" 0
finish
