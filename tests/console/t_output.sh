#!/usr/bin/env bash
# t_output.sh - output that never misleads (issue 13, database 114): the
# typed status document is the same for `migrate status --json` and
# /health/redis-migration; progress ends at 100 % with done = total; a walk
# held by the throttle says PAUSED at once; `backfill --dry-run` prints the
# memory preflight and exits 4 when the real run would be refused.
. "$(dirname "$0")/../cli/lib.sh"
S=$STEPQ
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$tmpout"; [ -n "${srv:-}" ] && "$(dirname "$0")/../redis.sh" stop "$srv"; [ -n "${spid:-}" ] && kill "$spid" 2>/dev/null' EXIT

for i in $(seq 1 60); do $S submit --type out --payload "{\"i\":$i}" >/dev/null; done

# --- the typed document -------------------------------------------------------
$S migrate status --json >"$tmp/st.json"
expect_ok "status --json starts with status, healthy, reasons" \
    'jq -e "keys_unsorted[:3] == [\"status\",\"healthy\",\"reasons\"]" "$tmp/st.json"'
expect_ok "the phase is flat and the pin null" \
    'jq -e ".phase == \"job\" and .pin == null and .phase_since == null" "$tmp/st.json"'
expect_ok "counters are numbers from the start" \
    'jq -e ".counters | (.fallback_reads == 0 and .lazy_migrations == 0 and .primary_misses == 0)" "$tmp/st.json"'
expect_ok "the throttle is typed" 'jq -e ".throttle == {\"paused\": false, \"rate\": null}" "$tmp/st.json"'
expect_ok "times come with an ISO 8601 twin" \
    'jq -e "(.checked_at | type) == \"number\" and (.checked_at_iso | test(\"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\\\\.[0-9]{3}Z$\"))" "$tmp/st.json"'
$S migrate phase dual-write --reason typed >/dev/null
$S migrate backfill --json >/dev/null
$S migrate verify >/dev/null
$S migrate status --json >"$tmp/st.json"
expect_ok "verify flags are booleans, counts numbers" \
    'jq -e ".verify | (.clean == true and .reverse == false and (.equal | type) == \"number\" and (.finished_at_iso | endswith(\"Z\")))" "$tmp/st.json"'
expect_ok "a done backfill is 100 % with done = total" \
    'jq -e ".backfill | (.state == \"done\" and .percent == 100 and .keys_done == .keys_total and .eta_ms == null)" "$tmp/st.json"'
expect_ok "audit entries are typed, with ISO times" \
    'jq -e ".audit[-1] | (.from == \"job\" and .to == \"dual-write\" and .force == false and (.ts | type) == \"number\" and (.ts_iso | endswith(\"Z\")))" "$tmp/st.json"'
expect_ok "the phase's times are flat too" \
    'jq -e "(.phase_since | type) == \"number\" and .dual_write_since == .phase_since and (.phase_since_iso | endswith(\"Z\"))" "$tmp/st.json"'

# The same document from serve (its own checked_at, processes and cache).
export STEPQ_API_TOKEN=output-test-token-0123
$S serve --listen 127.0.0.1:0 2>"$tmp/serve.log" &
spid=$!
for _ in $(seq 100); do port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/serve.log"); [ -n "$port" ] && break; sleep 0.05; done
sleep 0.3
curl -s "http://127.0.0.1:$port/health/redis-migration" >"$tmp/h.json"
$S migrate status --json >"$tmp/st.json"
strip='del(.checked_at, .checked_at_iso, .processes, .backfill.rate_per_s)'
expect_ok "/health/redis-migration and status --json are one shape" \
    'diff <(jq -S "$strip" "$tmp/h.json") <(jq -S "$strip" "$tmp/st.json")'
expect_ok "a process's pin is null when it follows the stored phase" \
    'jq -e ".processes | map(select(.kind == \"serve\")) | .[0] | (.pin == null and (.seen_iso | endswith(\"Z\")))" "$tmp/h.json"'
kill "$spid"; wait "$spid" 2>/dev/null; spid=

# --- progress -------------------------------------------------------------
expect_ok "backfill's last progress line is 100 % of one unit" \
    '$S migrate backfill --restart --log-every 1000000 2>&1 | grep -E "^backfill: ([0-9]+)/\1 keys \(100%\)"'
expect_ok "backfill --json ends with a progress event at 100 %" \
    '$S migrate backfill --restart --json | jq -s -e "map(select(.event == \"progress\")) | last | (.percent == 100 and .done == .total and .paused == false)"'
expect_ok "backup shows its total" \
    '$S migrate backup --out "$tmp/b.stepq" --side old 2>&1 | grep -E "^backup: ([0-9]+)/\1 keys \(100%\)"'

# A walk held by the operator's pause says so at once, and when it goes on.
$S migrate throttle --pause >/dev/null
$S migrate backfill --restart --log-every 1000000 >"$tmp/bf.out" 2>&1 &
bf=$!
sleep 1
expect_ok "a paused walk says PAUSED within a second, naming the way out" \
    'grep -q "^backfill: PAUSED by .stepq migrate throttle --pause. at 0 keys; waiting (run .stepq migrate throttle --resume.)" "$tmp/bf.out"'
expect_ok "and it is still waiting" 'kill -0 $bf'
$S migrate throttle --resume >/dev/null
wait $bf
expect_ok "resumed, then finished at 100 %" \
    'grep -q "^backfill: resumed at" "$tmp/bf.out" && grep -qE "^backfill: ([0-9]+)/\1 keys \(100%\)" "$tmp/bf.out"'

# --- backfill --dry-run: the preflight -----------------------------------------
expect_code 0 "dry run where the real run would start: exit 0" '$S migrate backfill --dry-run >"$tmp/dry.out" 2>/dev/null'
expect_ok "it prints used, estimate, maxmemory and the verdict" \
    'grep -qE "^preflight: memory used [0-9.]+ MiB, copy adds about [0-9.]+ MiB, maxmemory " "$tmp/dry.out" && grep -q "^verdict:   the real run would start" "$tmp/dry.out"'
$S migrate rollback --reason dry >/dev/null 2>&1
expect_code 4 "dry run in job: exit 4" '$S migrate backfill --dry-run >"$tmp/dry.out" 2>/dev/null'
expect_ok "the verdict names the refusal" \
    'grep -q "^verdict:   the real run would be refused: cannot backfill in phase .job." "$tmp/dry.out"'
expect_code 4 "dry run --json in job: exit 4" '$S migrate backfill --dry-run --json >"$tmp/dry.json"'
expect_ok "the JSON preflight is typed" \
    'jq -s -e "map(select(.event == \"preflight\"))[0] | (.verdict == \"refused\" and (.memory_used | type) == \"number\" and (.memory_estimate | type) == \"number\" and .maxmemory == 0 and (.refusal | test(\"phase .job.\")))" "$tmp/dry.json"'
expect_code 4 "the real run is refused as the dry run said" '$S migrate backfill'

# Past maxmemory: a server of our own, its limit set just above what it uses.
own_server output
for i in $(seq 1 200); do $S submit --type big --payload "{\"pad\":\"$(head -c 600 /dev/zero | tr '\0' x)\"}" >/dev/null; done
$S migrate phase dual-write >/dev/null
used=$(redis-cli -s "$REDIS_SOCK" INFO memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
redis-cli -s "$REDIS_SOCK" CONFIG SET maxmemory $((used + 20000)) >/dev/null
expect_code 4 "dry run past maxmemory: exit 4" '$S migrate backfill --dry-run >"$tmp/dry.out" 2>/dev/null'
expect_ok "the verdict says maxmemory" \
    'grep -q "^verdict:   the real run would be refused: cannot backfill: the copy adds about" "$tmp/dry.out" && grep -q "past maxmemory" "$tmp/dry.out"'
expect_ok "the dry run wrote nothing" '[ "$(redis-cli -s "$REDIS_SOCK" EXISTS stepq:backfill)" = 0 ]'
expect_code 0 "--force makes the dry run's verdict the forced run's: exit 0" '$S migrate backfill --dry-run --force >/dev/null 2>&1'
redis-cli -s "$REDIS_SOCK" CONFIG SET maxmemory 0 >/dev/null

finish
