#!/usr/bin/env bash
# scripts/mainjob.sh STEPQ [--short] - the main job (`make run`), against
# $REDIS_URL (an empty database): starts `stepq serve` and two workers,
# submits a steady stream of steps, walks the whole key migration forward
# under that load, printing each phase and the health endpoint's verdict,
# and ends with an independent reconciliation: every submitted id's final
# status from `stepq get`, and overlapping runs of one step from the
# workers' own log. Exit 0 when nothing was lost or run twice at once.
# --short (or STEPQ_MAIN_SHORT=1): a quick pass for the test suite.
set -uo pipefail
S=$1
short=${STEPQ_MAIN_SHORT:-0}
[ "${2:-}" = "--short" ] && short=1
here=$(cd "$(dirname "$0")" && pwd)
: "${REDIS_URL:?set REDIS_URL (scripts/run.sh starts a private server)}"
export REDIS_URL
unset ENABLE_DUAL_WRITE_STEPS PRIMARY_KEY_PATTERN
dwell=4 rate=0.02 drain=60
[ "$short" = 1 ] && dwell=1 rate=0.05 drain=30
export STEPQ_OPERATOR=main-job

tmp=$(mktemp -d /tmp/stepq-main.XXXXXX)
pids=()
cleanup() {
    touch "$tmp/stop"
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
say() { printf '== %s\n' "$*"; }
has_cmd() { "$S" "$1" --help >/dev/null 2>&1; }
has_sub() { "$S" migrate --help 2>/dev/null | grep -q "^  $1 "; }
pending() { "$S" list pending --limit 100000 2>/dev/null | wc -l; }

# -- serve ------------------------------------------------------------------
port=$((20000 + RANDOM % 20000))
health_url=""
if has_cmd serve; then
    STEPQ_API_TOKEN="" "$S" serve --listen "127.0.0.1:$port" --no-auth >"$tmp/serve.log" 2>&1 &
    pids+=($!)
    health_url="http://127.0.0.1:$port/health/redis-migration"
    for _ in $(seq 50); do curl -s -o /dev/null "$health_url" && break; sleep 0.1; done
    say "serve on 127.0.0.1:$port"
else
    say "skipped: serve not available"
fi
health() {
    [ -n "$health_url" ] || return 0
    local body
    body=$(curl -s -m 3 "$health_url") || { echo "   health: no answer"; return 0; }
    echo "   health: $(jq -r '[.status] + (.reasons // []) | join("; ")' <<<"$body" 2>/dev/null || echo "$body")"
}

# -- workers and the stream of steps ------------------------------------------
for w in 1 2; do
    "$S" worker --id "main-w$w" --concurrency 4 --heartbeat-ttl-ms 3000 --grace 20 \
        -- "$here/demo-step.sh" "$tmp/runs.log" 2>>"$tmp/worker$w.log" &
    pids+=($!)
done
say "2 workers, 4 steps at a time each"
(
    n=0
    while [ ! -e "$tmp/stop" ]; do
        n=$((n + 1))
        "$S" submit --type demo --priority $((n % 3)) --payload "{\"n\":$n}" >>"$tmp/submitted" ||
            echo "submit $n failed" >>"$tmp/submit-errors"
        sleep "$rate"
    done
) &
submitter=$!
say "submitting a step every ${rate}s"

status_line() {
    local st
    st=$("$S" migrate status --json 2>/dev/null) || return 0
    echo "   keys: $(jq -r '[.keys[] | select(.rule == "step") | "job:* \(.old_keys), step:* \(.new_keys)"] | join("")' <<<"$st"), pending $(pending), submitted $(wc -l <"$tmp/submitted")"
}
phase() {
    say "phase $1"
    if ! "$S" migrate phase "$1" --reason "main job" >/dev/null 2>"$tmp/phase.err"; then
        echo "   refused: $(cat "$tmp/phase.err")"
        return 1
    fi
    sleep "$dwell"
    status_line
    health
}
sub() { # sub NAME ARGS...: a migrate subcommand, or a note that it is missing
    local name=$1; shift
    if ! has_sub "$name"; then
        say "skipped: migrate $name not available"
        return 2
    fi
    say "migrate $name $*"
    "$S" migrate "$name" "$@"
    local rc=$?
    [ $rc -eq 0 ] || echo "   migrate $name exited $rc"
    health
    return $rc
}

# -- the walk ---------------------------------------------------------------
t0=$SECONDS
sleep "$dwell"
say "phase $("$S" migrate phase)"
status_line
health
# Reads move to step:* only after a backfill and a clean verify (design
# invariant 4), and old keys go only after a backup: without those commands
# the walk stops where it would become unsafe.
walk() {
    phase dual-write || return 1
    sub backfill --batch 200 || { say "stopping before dual-read: no backfill"; return 1; }
    sub verify || { say "stopping before dual-read: not verified"; return 1; }
    phase dual-read || return 1
    sub verify || { say "stopping before step-primary: not verified"; return 1; }
    phase step-primary || return 1
    # The switch to step needs a verified backup of the old keys; cleanup
    # deletes against a final one taken once nothing writes them any more.
    sub backup --out "$tmp/switch.backup" --side old || { say "stopping before step: no backup"; return 1; }
    phase step || return 1
    sub backup --out "$tmp/final.backup" --side old || { say "skipping cleanup: no final backup"; return 1; }
    # Exit 1 means some old keys were kept because their new twin is gone:
    # typically a worker's set of steps emptied in phase step, so its new
    # twin no longer exists. Cleanup names them; the backup holds them.
    sub cleanup --backup "$tmp/final.backup"
    case $? in
    0) ;;
    1) say "cleanup kept the old keys named above (no new twin; they are in the backup)" ;;
    *) return 1 ;;
    esac
}
if walk; then say "migration walked to the end in $((SECONDS - t0)) s"; else say "the walk stopped early"; fi
sleep "$dwell"
touch "$tmp/stop"
wait "$submitter"

# -- drain and reconcile ----------------------------------------------------
say "stopped submitting; waiting for the queue to drain"
end=$((SECONDS + drain))
while [ "$(pending)" -gt 0 ] || [ -n "$("$S" list active 2>/dev/null)" ]; do
    [ $SECONDS -lt $end ] || { echo "   still busy after ${drain}s"; break; }
    sleep 0.2
done
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()

sort -u "$tmp/submitted" >"$tmp/ids"
while read -r id; do
    "$S" get "$id" 2>/dev/null || printf '{"id":"%s","status":"missing"}\n' "$id"
done <"$tmp/ids" | jq -r '.status' | sort | uniq -c >"$tmp/statuses"
count() { awk -v s="$1" '$2 == s {print $1}' "$tmp/statuses" | grep . || echo 0; }
submitted=$(wc -l <"$tmp/ids")
completed=$(count completed)
failed=$(count failed)
lost=$((submitted - completed - failed))
# Two runs of one step overlap when one starts before the other ended.
twice=$(sort -k2,2 -k4,4n "$tmp/runs.log" | awk '
    $2 != id { id = $2; delete open; n = 0 }
    $1 == "start" { if (n > 0) bad[id] = 1; open[$3] = 1; n++ }
    $1 == "end" && ($3 in open) { delete open[$3]; n-- }
    END { c = 0; for (i in bad) c++; print c }')
runs=$(grep -c '^end' "$tmp/runs.log")
say "reconciliation"
printf '   submitted      %s\n   completed      %s\n   failed         %s\n   lost           %s\n   claimed twice  %s\n' \
    "$submitted" "$completed" "$failed" "$lost" "$twice"
printf '   (runs that ended: %s; statuses: %s)\n' "$runs" "$(tr -s ' \n' ' ' <"$tmp/statuses")"
[ -s "$tmp/submit-errors" ] && echo "   submit errors: $(wc -l <"$tmp/submit-errors")"
[ "$lost" -eq 0 ] && [ "$twice" -eq 0 ] && [ "$submitted" -gt 0 ]
