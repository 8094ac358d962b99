#!/usr/bin/env bash
# tests/chaos/chaos.sh STEPQ [--short] - fault injection (`make chaos`; the
# short form, CHAOS_SHORT=1 or --short, is the ctest entry chaos_short).
#
# On a redis-server of its own (AOF on, appendfsync always; it is killed,
# restarted and paused, so never the shared test server), under a steady
# load of submitters and workers, it walks the key migration forward
# (job -> dual-write -> backfill -> verify -> dual-read -> verify ->
# step-primary -> backup -> step [-> final backup, cleanup]) and back with
# `stepq migrate rollback` to job, injecting on the way:
#   - kill -9 of the backfill at random points (5 or more), resuming each time;
#   - kill -9 and restart of redis-server (AOF reload) during the backfill
#     (and, in the long form, again in phase step);
#   - SIGKILL of a worker while it runs a step (a new worker takes its place);
#   - SIGSTOP of redis-server for longer than the clients' command timeout
#     (5 s), then SIGCONT.
# Then the load stops, the queue drains, and tests/chaos/reconcile.py checks
# independently of stepq's counters: every acknowledged id completed, failed
# by policy or cancelled by us; none lost; no two runs of one step at once
# (flock in tests/chaos/step.sh); nothing resurrected; every old key equal
# to its new twin where both exist. Prints the figures; exit 0 when clean.
set -uo pipefail
S=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
short=${CHAOS_SHORT:-0}
[ "${2:-}" = "--short" ] && short=1
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
unset ENABLE_DUAL_WRITE_STEPS PRIMARY_KEY_PATTERN STEPQ_NAMESPACE STEPQ_RULES
export STEPQ_OPERATOR=chaos

if [ "$short" = 1 ]; then
    workers=3 conc=3 submitters=1 rate=0.04 dwell=1 bf_kills=5 pauses=1 wkills=1 restarts=1
    preload=4 cleanup=0
else
    workers=4 conc=4 submitters=2 rate=0.03 dwell=4 bf_kills=8 pauses=2 wkills=2 restarts=2
    preload=8 cleanup=1
fi
ttl=3000 pause_s=6 drain=60

tmp=$(mktemp -d /tmp/stepq-chaos.XXXXXX)
mkdir -p "$tmp/locks"
touch "$tmp/submitted" "$tmp/runs.log" "$tmp/faults"
rdir=$tmp/redis
aof="--appendonly yes --appendfsync always"
pids=()
declare -A wpid

say() { printf '== %s\n' "$*"; }
now() { echo "${EPOCHREALTIME/./}"; }
checks=0 broken=0
check() { # check DESCRIPTION CMD...: an expectation met along the way
    local what=$1
    shift
    checks=$((checks + 1))
    if "$@"; then
        echo "   ok   $what"
    else
        broken=$((broken + 1))
        echo "   FAIL $what"
    fi
}
fault() { echo "$1" >>"$tmp/faults"; }
rpid() { cat "$rdir/redis.pid"; }
rcli() { redis-cli -s "$REDIS_SOCK" "$@"; }
gone() { ! kill -0 "$1" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }

cleanup() {
    touch "$tmp/stop"
    [ -f "$rdir/redis.pid" ] && kill -CONT "$(rpid)" 2>/dev/null
    for p in "${pids[@]}" "${wpid[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}" "${wpid[@]}"; do
        for _ in $(seq 50); do gone "$p" && break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ -n "${CHAOS_KEEP:-}" ]; then
        # Keep the AOF too: it holds every write, for the forensics.
        [ -f "$rdir/redis.pid" ] && kill "$(rpid)" 2>/dev/null
        echo "kept $tmp"
    else
        "$root/tests/redis.sh" stop "$rdir" >/dev/null 2>&1
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT

# -- the private redis-server ----------------------------------------------
REDIS_EXTRA="$aof" "$root/tests/redis.sh" start "$rdir" || exit 1
# shellcheck disable=SC1091
. "$rdir/env"
port=$REDIS_PORT
export REDIS_URL="unix://$REDIS_SOCK"
say "private redis-server (AOF, appendfsync always) at $REDIS_URL"

# The side the stored phase reads (job:* or step:*), for the checks below.
read_prefix() {
    case $("$S" migrate phase 2>/dev/null) in
    job | dual-write) echo job ;;
    *) echo step ;;
    esac
}

# restart_redis: kill -9, then the same port, socket and dir, so that the
# AOF is reloaded; every id acknowledged before the kill must still exist.
restart_redis() {
    local pfx missing
    pfx=$(read_prefix)
    cp "$tmp/submitted" "$tmp/acked"
    kill -9 "$(rpid)"
    for _ in $(seq 50); do gone "$(rpid)" && break; sleep 0.05; done
    # A zombie (PID 1 of a container may never reap the daemon) would pass
    # redis.sh's "already running" test: the pidfile goes first.
    rm -f "$rdir/redis.pid"
    sleep 0.3
    REDIS_EXTRA="$aof --port $port" "$root/tests/redis.sh" start "$rdir" || return 1
    fault redis-restart
    missing=$(sed "s/^/EXISTS $pfx:/" "$tmp/acked" | rcli | grep -c '^0$')
    say "redis-server killed (-9) and restarted: $(wc -l <"$tmp/acked") acknowledged ids checked, $missing missing"
    check "nothing acknowledged before the restart is lost" [ "$missing" -eq 0 ]
}

# pause_redis: SIGSTOP past the clients' 5 s command timeout, then SIGCONT;
# submitters and workers must go on.
pause_redis() {
    local before t_cont
    say "redis-server paused (SIGSTOP) for ${pause_s}s"
    kill -STOP "$(rpid)"
    fault redis-pause
    sleep "$pause_s"
    kill -CONT "$(rpid)"
    t_cont=$(now)
    before=$(wc -l <"$tmp/submitted")
    sleep 3
    local runs_after
    runs_after=$(awk -v t="$t_cont" '$1 == "start" && $4 > t' "$tmp/runs.log" | wc -l)
    echo "   after SIGCONT: $(($(wc -l <"$tmp/submitted") - before)) submitted, $runs_after runs started in 3 s"
    echo "   workers reporting retries: $(grep -l 'retrying' "$tmp"/worker*.log 2>/dev/null | wc -l), back: $(grep -l 'redis is back' "$tmp"/worker*.log 2>/dev/null | wc -l)"
    check "the submitters go on after SIGCONT" [ "$(wc -l <"$tmp/submitted")" -gt "$before" ]
    check "the workers go on after SIGCONT" [ "$runs_after" -gt 0 ]
}

# -- workers and submitters -------------------------------------------------
start_worker() { # start_worker NAME
    "$S" worker --id "chaos-$1" --concurrency "$conc" --heartbeat-ttl-ms "$ttl" --grace 10 \
        -- "$here/step.sh" "$tmp" 2>>"$tmp/worker-$1.log" &
    wpid[$1]=$!
}

# kill_worker: SIGKILL a worker while one of its steps runs; a new one
# takes its place and the others' reapers requeue the step.
kill_worker() {
    local w="" k kids ids="" id
    # running PID [AGE_US]: the step id a command PID logged a start for
    # (at most AGE_US ago) and no end yet.
    running() {
        awk -v p="$1" -v min="$(($(now) - ${2:-999999999999}))" \
            '$3 == p {id = ($1 == "start" && $4 >= min) ? $2 : ""} END {print id}' "$tmp/runs.log"
    }
    # Find a worker running a step, freeze it and its commands so that what
    # runs is read while nothing can finish, and kill it only when a step is
    # really mid-run; else thaw it and look again (a slow machine, or ASan,
    # can let the step end between the look and the freeze). A frozen
    # command still dies with its worker: SIGKILL works on it.
    for _ in $(seq 400); do
        w=""
        for k in "${!wpid[@]}"; do
            for c in $(pgrep -P "${wpid[$k]}" 2>/dev/null); do
                [ -n "$(running "$c" 40000)" ] && { w=$k; break 2; }
            done
        done
        if [ -n "$w" ]; then
            kill -STOP "${wpid[$w]}" 2>/dev/null
            kids=$(pgrep -P "${wpid[$w]}" | tr '\n' ' ')
            for k in $kids; do kill -STOP "$k" 2>/dev/null; done
            ids=""
            for k in $kids; do
                id=$(running "$k")
                [ -n "$id" ] && ids="$ids $id"
            done
            [ -n "$ids" ] && break
            for k in $kids; do kill -CONT "$k" 2>/dev/null; done
            kill -CONT "${wpid[$w]}" 2>/dev/null
            w=""
        fi
        sleep 0.01
    done
    if [ -z "$w" ]; then
        check "a worker was running a step when killed" false
        return
    fi
    kill -9 "${wpid[$w]}"
    wait "${wpid[$w]}" 2>/dev/null
    fault worker-kill9
    echo "$ids" | tr ' ' '\n' | grep . >>"$tmp/killed-mid-step"
    say "worker chaos-$w killed (-9) while running:$ids"
    unset "wpid[$w]"
    start_worker "${w}r"
    local dead=1
    for _ in $(seq 30); do
        dead=1
        for k in $kids; do gone "$k" || dead=0; done
        [ $dead = 1 ] && break
        sleep 0.1
    done
    check "its running commands died with it" [ $dead = 1 ]
}

submitter() { # submitter K: submits until $tmp/stop exists
    local k=$1 n=0 id payload
    local -a args
    while [ ! -e "$tmp/stop" ]; do
        n=$((n + 1))
        args=(--type chaos --priority $((n % 3)))
        payload="{\"k\":$k,\"n\":$n}"
        if [ $((n % 10)) -eq 0 ]; then
            payload="{\"k\":$k,\"n\":$n,\"fail\":true}"
            args+=(--max-attempts 2)
        fi
        if id=$("$S" submit "${args[@]}" --payload "$payload" 2>>"$tmp/submit-errors.log"); then
            echo "$id" >>"$tmp/submitted"
            # Cancel some at once: they must stay cancelled (never run again).
            if [ $((n % 15)) -eq 7 ] && "$S" cancel "$id" >/dev/null 2>>"$tmp/cancel.log"; then
                echo "$id $(now)" >>"$tmp/cancelled"
            fi
        else
            echo "$(now) $k $n" >>"$tmp/submit-errors"
        fi
        sleep "$rate"
    done
}

for i in $(seq "$workers"); do start_worker "w$i"; done
for k in $(seq "$submitters"); do
    submitter "$k" &
    pids+=($!)
done
say "$workers workers ($conc steps at a time, heartbeat ttl ${ttl} ms), $submitters submitter(s)"
sleep "$preload"

# -- the walk forward -----------------------------------------------------
# retry N CMD...: a command that may be refused or see transient differences
# under load (verify re-checks; a phase move waits for its verify).
retry() {
    local n=$1 rc
    shift
    for i in $(seq "$n"); do
        "$@" >>"$tmp/walk.log" 2>&1
        rc=$?
        [ $rc -eq 0 ] && return 0
        echo "   '$*' exited $rc (try $i of $n)"
        sleep 1
    done
    tail -5 "$tmp/walk.log"
    return 1
}
phase() {
    say "phase $1"
    retry 3 "$S" migrate phase "$1" --reason "chaos" || return 1
    sleep "$dwell"
}
verify() {
    say "migrate verify $*"
    retry 5 "$S" migrate verify "$@"
}

backfill() {
    local keys bf_rate kills=0 restarted=0 bf rc
    keys=$(rcli DBSIZE)
    bf_rate=$((keys / 6 > 10 ? keys / 6 : 10))
    say "migrate backfill (about $keys keys at $bf_rate keys/s), kill -9 it $bf_kills times"
    while [ $kills -lt "$bf_kills" ]; do
        "$S" migrate backfill --batch 4 --rate "$bf_rate" >>"$tmp/backfill.log" 2>&1 &
        bf=$!
        sleep "0.$((RANDOM % 9 + 3))"
        if [ $restarted -lt 1 ] && [ $kills -eq 2 ]; then
            restart_redis || return 1
            restarted=1
            sleep 0.3
        fi
        if gone "$bf"; then
            wait "$bf"
            echo "   backfill ended on its own (exit $?) before the kill; again"
            continue
        fi
        kill -9 "$bf"
        wait "$bf" 2>/dev/null
        kills=$((kills + 1))
        fault backfill-kill9
        echo "   killed the backfill (-9) at $(rcli HGET stepq:backfill keys_done) keys done ($kills)"
    done
    say "migrate backfill: resume to the end"
    retry 5 "$S" migrate backfill --batch 200 --json || return 1
    check "the backfill resumed its run after the kills" grep -q '"resumed":true' "$tmp/walk.log"
}

walk_forward() {
    phase dual-write || return 1
    backfill || return 1
    verify || return 1
    phase dual-read || return 1
    pause_redis
    verify || return 1
    phase step-primary || return 1
    kill_worker
    say "migrate backup --side old"
    retry 3 "$S" migrate backup --out "$tmp/switch.backup" --side old --quiet || return 1
    phase step || return 1
    if [ "$restarts" -gt 1 ]; then restart_redis; fi
    if [ "$pauses" -gt 1 ]; then pause_redis; fi
    if [ "$wkills" -gt 1 ]; then kill_worker; fi
    if [ "$cleanup" = 1 ]; then
        say "migrate backup --side old (final), cleanup"
        retry 3 "$S" migrate backup --out "$tmp/final.backup" --side old --quiet || return 1
        "$S" migrate cleanup --backup "$tmp/final.backup" --quiet >>"$tmp/walk.log" 2>&1
        echo "   cleanup exited $? (1: old keys without a new twin were kept)"
        sleep "$dwell"
    fi
}

rollback() {
    say "migrate rollback (from $("$S" migrate phase))"
    retry 5 "$S" migrate rollback --reason chaos || return 1
    sleep "$dwell"
}

walk_back() {
    rollback || return 1 # step -> step-primary: the old keys rewritten from the new
    rollback || return 1 # step-primary -> dual-read
    rollback || return 1 # dual-read -> dual-write: verify --reverse first
}

t0=$SECONDS
walked=0
if walk_forward && walk_back; then walked=1; fi
check "the walk went forward to step and back to dual-write" [ $walked = 1 ]

# -- drain, compare, back to job, reconcile ---------------------------------
touch "$tmp/stop"
for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
pids=()
say "stopped submitting; draining"
busy() { [ "$(rcli ZCARD jobs:pending)" != 0 ] || [ "$(rcli SCARD jobs:active)" != 0 ]; }
end=$((SECONDS + drain))
while busy && [ $SECONDS -lt $end ]; do sleep 0.2; done
idle() { ! busy; }
check "the queue drained" idle
ran_again() { # every step of a killed worker started again (requeued by a reaper)
    local id
    for id in $(cat "$tmp/killed-mid-step" 2>/dev/null); do
        [ "$(grep -c "^start $id " "$tmp/runs.log")" -ge 2 ] || grep -q "^$id " "$tmp/cancelled" ||
            { echo "   step $id of a killed worker never ran again"; return 1; }
    done
    [ -s "$tmp/killed-mid-step" ]
}
check "the killed workers' steps ran again elsewhere" ran_again

say "old keys against their new twins (phase $("$S" migrate phase))"
python3 "$here/reconcile.py" twins "$REDIS_SOCK" | tee "$tmp/twins"
verify
rollback # dual-write -> job: reads go back to job:*
for w in "${!wpid[@]}"; do kill -TERM "${wpid[$w]}" 2>/dev/null; done
for w in "${!wpid[@]}"; do wait "${wpid[$w]}" 2>/dev/null; done
wpid=()
final=$("$S" migrate phase)
check "the walk ended back in job" [ "$final" = job ]
python3 "$here/reconcile.py" twins "$REDIS_SOCK" >"$tmp/twins-end"

say "reconciliation over every acknowledged id (phase $final, read from job:*)"
python3 "$here/reconcile.py" steps "$REDIS_SOCK" "$tmp" old >"$tmp/steps"
rc=$?
grep '^problem' "$tmp/steps" | head -20
fig() { awk -v k="$1" '$1 == k {v = $2} END {print v + 0}' "$2" 2>/dev/null || echo 0; }
printf '   %-28s %s\n' \
    "steps submitted (acked)" "$(fig submitted "$tmp/steps")" \
    "completed" "$(fig completed "$tmp/steps")" \
    "failed (by policy)" "$(fig failed "$tmp/steps")" \
    "cancelled" "$(fig cancelled "$tmp/steps")" \
    "submits refused (not acked)" "$(wc -l <"$tmp/submit-errors" 2>/dev/null || echo 0)" \
    "runs started / cut short" "$(fig runs_started "$tmp/steps") / $(fig runs_killed_or_stopped "$tmp/steps")" \
    "faults injected" "$(wc -l <"$tmp/faults")"
sort "$tmp/faults" | uniq -c | awk '{printf "     %-26s %s\n", $2, $1}'
printf '   %-28s %s\n' \
    "lost" "$(($(fig lost "$tmp/steps") + $(fig stuck "$tmp/steps")))" \
    "duplicated (ran twice at once)" "$(fig duplicated "$tmp/steps")" \
    "resurrected" "$(fig resurrected "$tmp/steps")" \
    "failed early / wrong set" "$(fig failed_early "$tmp/steps") / $(fig wrong_set "$tmp/steps")" \
    "keys compared / unequal" "$(fig keys_compared "$tmp/twins") / $(fig keys_unequal "$tmp/twins")" \
    "  again in job" "$(fig keys_compared "$tmp/twins-end") / $(fig keys_unequal "$tmp/twins-end")" \
    "checks along the way" "$((checks - broken)) ok, $broken failed" \
    "time" "$((SECONDS - t0)) s"
[ "$(fig keys_unequal "$tmp/twins")" = 0 ] && [ "$(fig keys_unequal "$tmp/twins-end")" = 0 ] &&
    [ "$rc" = 0 ] && [ "$broken" = 0 ] && [ "$(wc -l <"$tmp/faults")" -gt 0 ]
ok=$?
if [ $ok != 0 ]; then
    # What the processes said about each step with a problem: a run in CI
    # leaves nothing else behind to read.
    for id in $(sed -n 's/^problem [a-z]* \([0-9a-f-]\{36\}\):.*/\1/p' "$tmp/steps" | sort -u | head -5); do
        echo "== what the logs say about $id"
        grep -h "$id" "$tmp"/worker*.log "$tmp/runs.log" "$tmp/walk.log" 2>/dev/null | head -20 | sed 's/^/   /'
    done
    echo "== the workers' last words about redis"
    grep -hiE "retrying|redis is back|redis:|cannot" "$tmp"/worker*.log 2>/dev/null | tail -20 | sed 's/^/   /'
fi
[ $ok = 0 ] && echo "chaos: clean" || echo "chaos: FAILED"
exit $ok
