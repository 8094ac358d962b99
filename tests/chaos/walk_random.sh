#!/usr/bin/env bash
# tests/chaos/walk_random.sh STEPQ - the randomized walk (`make chaos-walk`;
# a CI-size run is the ctest entry chaos_walk). docs/chaos.md tells more.
#
# Many short random sequences of operator commands, each on an empty
# database of a private redis-server, under load from real `stepq worker`
# processes (running tests/chaos/step.sh) and a submitter: phase moves
# forward and back, rollback, backfill (sometimes killed -9 halfway, and
# --repair where the tool has it), verify and verify --reverse, backup,
# cleanup, restore, reap, SIGKILL of a worker mid-step. When a command is
# refused (exit 4) the operator sometimes does what its message advises.
# Exit 4 is normal and counted; any exit a command may not give is a failure.
# After each operation tests/chaos/reconcile.py looks at every step on the
# side the phase reads (a step seen ended and later pending or active is
# resurrected). At the end of a sequence the load stops and the queue drains;
# then: every step completed once, failed by policy or cancelled, none lost,
# none run twice (at once: flock; again after a worker reported its end:
# the time-stamped worker logs), none resurrected, and the old keys equal to
# their new twins where the phase says so. Then the operator leads the walk
# out to 'step' and a cleanup as the tool advises ("every state the tool can
# lead to, the tool can lead out of"; WALK_FINISH=0 skips it), and the steps
# are reconciled once more.
#
#   SEED=N        the first sequence's seed (sequence i uses N+i-1); a failed
#                 sequence prints the line that replays it
#   WALK_SEQS=N   sequences (default 100)
#   WALK_OPS=N    operations per sequence (default 12)
#   WALK_FINISH=0 do not lead each sequence out to 'step' and cleanup
#   WALK_KEEP=1   keep the temp dir (every sequence's logs and backups)
#   WALK_VERBOSE=1 print every operation as it runs
#   WALK_SKIP=restore-replace  never run `restore --replace` (nor follow the
#                 advice to): the one knob that leaves an operation out; the
#                 run's first line and its figures say so
set -uo pipefail
S=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
unset ENABLE_DUAL_WRITE_STEPS PRIMARY_KEY_PATTERN STEPQ_NAMESPACE STEPQ_RULES
export STEPQ_OPERATOR=walk

seqs=${WALK_SEQS:-100}
nops=${WALK_OPS:-12}
finish=${WALK_FINISH:-1}
verbose=${WALK_VERBOSE:-0}
seed0=${SEED:-$(od -An -N3 -tu4 /dev/urandom | tr -d ' ')}
skip=${WALK_SKIP:-}
case $skip in "" | restore-replace) ;; *) echo "WALK_SKIP: only 'restore-replace' can be left out" >&2; exit 2 ;; esac
workers=2 conc=2 ttl=3000 rate=0.15 drain=20 op_timeout=120

tmp=$(mktemp -d /tmp/stepq-walk.XXXXXX)
rdir=$tmp/redis
declare -A wpid
spid=""

now() { echo "${EPOCHREALTIME/./}"; }
gone() { ! kill -0 "$1" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }
rcli() { redis-cli -s "$REDIS_SOCK" "$@"; }
# reconcile CMD ARGS...: one command of tests/chaos/reconcile.py, sent to the
# one process of it that serves the whole run (a look after every operation
# would otherwise pay Python's start each time); its exit code is returned.
reconcile() {
    local line
    echo "$*" >&"${REC[1]}"
    while IFS= read -r line <&"${REC[0]}"; do
        case $line in
        "--end-- "*) return "${line#--end-- }" ;;
        esac
        printf '%s\n' "$line"
    done
    echo "reconcile.py serve is gone" >&2
    return 3
}
fig() { awk -v k="$1" '$1 == k {v = $2} END {print v + 0}' "$2" 2>/dev/null || echo 0; }

stop_pid() { # stop_pid PID: SIGTERM, then SIGKILL after 5 s
    kill -TERM "$1" 2>/dev/null
    for _ in $(seq 50); do gone "$1" && break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}
stop_load() {
    [ -d "${sd:-}" ] && touch "$sd/stop"
    [ -n "$spid" ] && stop_pid "$spid"
    spid=""
}
stop_workers() {
    local w
    for w in "${!wpid[@]}"; do kill -TERM "${wpid[$w]}" 2>/dev/null; done
    for w in "${!wpid[@]}"; do stop_pid "${wpid[$w]}"; done
    wpid=()
}
cleanup() {
    stop_load
    stop_workers
    [ -n "${REC_PID:-}" ] && kill "$REC_PID" 2>/dev/null
    if [ -n "${WALK_KEEP:-}" ]; then
        [ -f "$rdir/redis.pid" ] && kill "$(cat "$rdir/redis.pid")" 2>/dev/null
        echo "kept $tmp"
    else
        "$root/tests/redis.sh" stop "$rdir" >/dev/null 2>&1
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$root/tests/redis.sh" start "$rdir" || exit 1
# shellcheck disable=SC1091
. "$rdir/env"
export REDIS_URL="unix://$REDIS_SOCK"
coproc REC { python3 "$here/reconcile.py" serve "$REDIS_SOCK" 2>&1; }
repair=""
"$S" migrate backfill --help 2>&1 | grep -q -- '--repair' && repair=--repair

# -- load ------------------------------------------------------------------
# Each line of a worker's stderr gets the time it was read: the reconciler
# orders a worker's "step X completed" against the runs' start times.
stamp() {
    local l
    while IFS= read -r l; do printf '%s %s\n' "${EPOCHREALTIME/./}" "$l"; done
}
nworker=0
start_worker() {
    nworker=$((nworker + 1))
    local name=w$nworker
    "$S" worker --id "walk-$name" --concurrency "$conc" --heartbeat-ttl-ms "$ttl" --grace 5 \
        -- "$here/step.sh" "$sd" 2> >(stamp >>"$sd/worker-$name.log") &
    wpid[$name]=$!
}

submitter() { # as chaos.sh's: every tenth step fails by policy, some are cancelled
    local n=0 id payload
    local -a args
    while [ ! -e "$sd/stop" ]; do
        n=$((n + 1))
        args=(--type walk --priority $((n % 3)))
        payload="{\"n\":$n}"
        if [ $((n % 10)) -eq 0 ]; then
            payload="{\"n\":$n,\"fail\":true}"
            args+=(--max-attempts 2)
        fi
        if id=$("$S" submit "${args[@]}" --payload "$payload" 2>>"$sd/submit-errors.log"); then
            echo "$id" >>"$sd/submitted"
            if [ $((n % 15)) -eq 7 ] && "$S" cancel "$id" >/dev/null 2>>"$sd/cancel.log"; then
                echo "$id $(now)" >>"$sd/cancelled"
            fi
        fi
        sleep "$rate"
    done
}

# kill_worker: SIGKILL a worker while a step of it runs (its command dies
# with it); a new worker takes its place, a reaper requeues the step. (The
# worker's other child is the time stamper of its stderr.)
kill_worker() {
    local k
    for _ in $(seq 60); do
        for k in "${!wpid[@]}"; do
            if [ -n "$(pgrep -P "${wpid[$k]}" -f 'step\.sh' 2>/dev/null)" ]; then
                kill -9 "${wpid[$k]}"
                wait "${wpid[$k]}" 2>/dev/null
                unset "wpid[$k]"
                start_worker
                echo "SIGKILL walk-$k mid-step" >>"$sd/ops"
                kills=$((kills + 1))
                return 0
            fi
        done
        sleep 0.05
    done
    echo "no worker was running a step to kill" >>"$sd/ops"
    return 0
}

# -- operations --------------------------------------------------------------
phases=(job dual-write dual-read step-primary step)
idx() { local i; for i in "${!phases[@]}"; do [ "${phases[$i]}" = "$1" ] && echo "$i"; done; }
next_of() { local i; i=$(idx "$1"); echo "${phases[$((i < 4 ? i + 1 : 4))]}"; }
prev_of() { local i; i=$(idx "$1"); echo "${phases[$((i > 0 ? i - 1 : 0))]}"; }
pick() { R=$((RANDOM % $1)); } # R: 0..N-1, from the sequence's seed (never in a subshell)

# The exits each command may give besides 0, 3 (nothing to do) and 4
# (refused): verify 1 (differences), cleanup 1 (old keys kept).
allowed() { # allowed RC ARGV...
    case $1 in 0 | 3 | 4) return 0 ;; esac
    [ "$1" = 1 ] && case "$2 $3" in "migrate verify" | "migrate cleanup") return 0 ;; esac
    return 1
}

# new_backup: a fresh file name; latest: the newest old-side backup, else any.
new_backup() { nb=$((nb + 1)); B="$sd/b$nb.stepq"; }
latest() {
    B=$(sed -n 's/^old //p' "$sd/backups" 2>/dev/null | tail -1)
    [ -n "$B" ] || B=$(awk '{f = $2} END {print f}' "$sd/backups" 2>/dev/null)
}
any_backup() {
    local n
    n=$(wc -l <"$sd/backups" 2>/dev/null || echo 0)
    if [ "$n" -gt 0 ]; then
        pick "$n"
        B=$(sed -n "$((R + 1))s/^[a-z]* //p" "$sd/backups")
    else
        B=""
    fi
}

# advice: what the last refusal advises, as an argv in ADVICE (empty: none).
# The tool names commands in single quotes ('stepq migrate backfill'); a
# move "one step at a time" names the next phase; a restore over existing
# keys says "use --replace"; FILE stands for a backup file, and a cleanup
# named without one gets the latest.
advice() {
    local a="" w
    ADVICE=()
    a=$(grep -o "'stepq [^']*'" "$sd/out" | head -1 | tr -d "'")
    [ -z "$a" ] && a=$(sed -n "s/.*next is '\([a-z-]*\)'.*/stepq migrate phase \1/p" "$sd/out" | head -1)
    [ -z "$a" ] && grep -q -- "use --replace" "$sd/out" && a="stepq ${LAST[*]} --replace"
    [ -z "$a" ] && grep -qE "take (a|one|a new|a final) [a-z ]*backup" "$sd/out" &&
        a="stepq migrate backup --side old"
    [ -z "$a" ] && return
    # shellcheck disable=SC2206
    w=($a)
    ADVICE=("${w[@]:1}")
    case " ${ADVICE[*]} " in
    *" backup "*)
        new_backup
        if [[ " ${ADVICE[*]} " == *" FILE "* ]]; then ADVICE=("${ADVICE[@]/FILE/$B}")
        elif [[ " ${ADVICE[*]} " != *" --out "* ]]; then ADVICE+=(--out "$B"); fi
        ;;
    *" FILE "*)
        latest
        ADVICE=("${ADVICE[@]/FILE/$B}")
        ;;
    *" cleanup "*) # 'stepq migrate cleanup --adopt': the backup is the operator's to name
        latest
        [[ " ${ADVICE[*]} " == *" --backup "* ]] || [ -z "$B" ] || ADVICE+=(--backup "$B")
        ;;
    esac
}

# kind ARGV...: tallies an operation by command and the flags that change
# what it does (the figures print the tally).
declare -A kinds
kind() {
    local k="$1 ${2:-}" a
    [ "$1" = migrate ] || k=$1
    for a in "$@"; do
        case $a in --reverse | --repair | --replace | --dry-run | --restart) k="$k $a" ;; esac
    done
    kinds[$k]=$((${kinds[$k]:-0} + 1))
}

# op TAG ARGV...: runs `stepq ARGV` as the next operation, judges its exit,
# then looks at every step (reconcile.py snapshot). Sets RC and PH.
op() {
    local tag=$1 before=$PH t0
    shift
    LAST=("$@")
    ops=$((ops + 1))
    kind "$@"
    t0=$(now)
    timeout "$op_timeout" "$S" "$@" >"$sd/out" 2>&1
    RC=$?
    local verdict=ok
    if [ "$RC" = 4 ]; then
        verdict=refused
        refusals=$((refusals + 1))
        sed -n 's/^stepq: //p' "$sd/out" | head -1 |
            sed -E 's/[0-9a-f-]{36}/ID/g; s#/[^ '"'"']*#PATH#g; s/[0-9]+/N/g' >>"$tmp/refusals"
    elif ! allowed "$RC" "$@"; then
        verdict="UNEXPECTED EXIT"
        unexpected=$((unexpected + 1))
        seq_bad=$((seq_bad + 1))
    fi
    if [ "$1 ${2:-}" = "migrate backup" ] && [ "$RC" = 0 ]; then
        local side=old
        [[ " $* " == *" --side new "* ]] && side=new
        echo "$side $B" >>"$sd/backups"
    fi
    {
        printf '%3d %-8s %-12s stepq %s -> %s%s (%s ms)\n' "$ops" "$tag" "$before" "$*" "$RC" \
            "$([ "$verdict" = ok ] || echo " $verdict")" "$((($(now) - t0) / 1000))"
        [ "$verdict" != ok ] && sed -n 's/^stepq: /      /p' "$sd/out" | head -3
        # What differs (verify), what was kept (cleanup).
        [ "$RC" = 1 ] && grep -E "^  [a-z_ ]+ '|error on key" "$sd/out" |
            head -3 | sed 's/^ */      /'
    } >"$sd/op"
    cat "$sd/op" >>"$sd/ops"
    [ "$verbose" = 1 ] && cat "$sd/op"
    cat "$sd/out" >>"$sd/walk.log"
    # What a cleanup deleted stays deleted while the phase stays 'step' and
    # nothing is restored (see reconcile.py snapshot).
    if [ "$1 ${2:-}" = "migrate cleanup" ] && [ "$PH" = step ] && [[ " $* " != *" --dry-run "* ]]; then
        reconcile deleted "$sd" >/dev/null
    elif [ "$1 ${2:-}" = "migrate restore" ] && [ "$RC" = 0 ]; then
        rm -f "$sd/deleted"
    fi
    look "s$s.op$ops"
    [ "$PH" = step ] || rm -f "$sd/deleted"
    # A keyspace stops being written in 'job': back in 'job', the new side
    # is stale until a clean verify (or a repair) in dual-write says equal.
    [ "$PH" = job ] && [ "$before" != job ] && { stale=1; bf_done=0; }
    if [ "$PH" = dual-write ] && [ "$RC" = 0 ]; then
        case " $* " in
        " migrate verify "*) [[ " $* " == *" --reverse "* || " $* " == *" --sample "* ]] || stale=0 ;;
        " migrate backfill "*) bf_done=1 ;;
        esac
        [ -n "$repair" ] && [[ " $* " == *" migrate backfill "*" $repair "* ]] && stale=0
    fi
    return 0
}

# look TAG: one look at every step; sets PH (the stored phase) and UNFINISHED.
look() {
    if ! reconcile snapshot "$sd" "$1" >"$sd/look" 2>>"$sd/walk.log"; then
        echo "   reconcile.py snapshot failed at $1" >>"$sd/ops"
        seq_bad=$((seq_bad + 1))
    fi
    PH=$(awk '$1 == "phase" {print $2}' "$sd/look")
    UNFINISHED=$(fig unfinished "$sd/look")
    [ -n "$PH" ] || PH=job
}

# follow PROB: with probability PROB/100, do what the last refusal advises.
follow() {
    [ "$RC" = 4 ] || [ "$RC" = 1 ] || return 0
    pick 100
    [ "$R" -lt "$1" ] || return 0
    advice
    [ "${#ADVICE[@]}" -gt 0 ] || return 0
    if [ "$skip" = restore-replace ] && [[ " ${ADVICE[*]} " == *" restore "*" --replace "* ]]; then
        skipped=$((skipped + 1))
        return 0
    fi
    advised=$((advised + 1))
    op advice "${ADVICE[@]}"
}

backfill_killed() { # a backfill killed -9 at a random point; the next one resumes it
    local bf
    pick 6
    "$S" migrate backfill --batch 2 --rate 40 >>"$sd/walk.log" 2>&1 &
    bf=$!
    sleep "0.$((R + 1))"
    ops=$((ops + 1))
    if gone "$bf"; then
        wait "$bf"
        printf '%3d %-8s %-12s stepq migrate backfill (to be killed) ended first -> %s\n' \
            "$ops" kill "$PH" "$?" >>"$sd/ops"
    else
        kill -9 "$bf"
        wait "$bf" 2>/dev/null
        bf_kills=$((bf_kills + 1))
        printf '%3d %-8s %-12s stepq migrate backfill killed -9 at %s keys done\n' "$ops" kill "$PH" \
            "$(rcli HGET stepq:backfill keys_done)" >>"$sd/ops"
    fi
    look "s$s.op$ops"
}

# One random operation. The weights favour the forward walk ("next" is the
# runbook's next move, with the tool's advice always followed), so that a
# sequence of a dozen operations reaches the later phases.
random_op() {
    pick 100
    local r=$R
    if [ $r -lt 28 ]; then # the runbook's next move
        if [ "$PH" = step ]; then
            latest
            if [ -n "$B" ]; then op next migrate cleanup --backup "$B"; else new_backup; op next migrate backup --out "$B"; fi
        else
            op next migrate phase "$(next_of "$PH")" --reason walk
        fi
        follow 100
    elif [ $r -lt 32 ]; then # a move forward, or anywhere now and then
        pick 5
        local to
        to=$(next_of "$PH")
        [ $R = 0 ] && { pick 5; to=${phases[$R]}; }
        op phase migrate phase "$to" --reason walk
        follow 50
    elif [ $r -lt 35 ]; then # a move back, or a rollback: one in ten
        op phase migrate phase "$(prev_of "$PH")" --reason walk
        follow 50
    elif [ $r -lt 42 ]; then
        op rollback migrate rollback --reason walk
        follow 50
    elif [ $r -lt 50 ]; then
        pick 10
        if [ $R = 0 ]; then op backfill migrate backfill --restart; else op backfill migrate backfill --batch $((R * 7 + 3)); fi
        follow 50
    elif [ $r -lt 54 ]; then
        backfill_killed
    elif [ $r -lt 58 ] && [ -n "$repair" ]; then
        op repair migrate backfill "$repair"
        follow 50
    elif [ $r -lt 64 ]; then
        op verify migrate verify
        follow 50
    elif [ $r -lt 68 ]; then
        op verify migrate verify --reverse
        follow 50
    elif [ $r -lt 74 ]; then
        new_backup
        pick 6
        if [ $R = 0 ]; then op backup migrate backup --out "$B" --side new --quiet; else op backup migrate backup --out "$B" --quiet; fi
        follow 50
    elif [ $r -lt 80 ]; then
        pick 4
        if [ $R = 0 ]; then any_backup; else latest; fi
        if [ -z "$B" ]; then
            new_backup
            op backup migrate backup --out "$B" --quiet
        else
            pick 8
            if [ $R = 0 ]; then op cleanup migrate cleanup --backup "$B" --dry-run; else op cleanup migrate cleanup --backup "$B"; fi
        fi
        follow 50
    elif [ $r -lt 83 ]; then
        any_backup
        if [ -n "$B" ]; then
            pick 4
            case $R in
            0) op restore migrate restore "$B" --dry-run ;;
            1)
                if [ "$skip" = restore-replace ]; then
                    skipped=$((skipped + 1))
                    op restore migrate restore "$B"
                else
                    op restore migrate restore "$B" --replace
                fi
                ;;
            *) op restore migrate restore "$B" ;;
            esac
            follow 50
        fi
    elif [ $r -lt 87 ]; then
        op reap reap --timeout-ms $((2 * ttl))
    elif [ $r -lt 93 ]; then
        kill_worker
    elif [ $r -lt 95 ]; then
        op status migrate status
    else
        pick 10
        sleep "$(((R + 3) / 10)).$(((R + 3) % 10))"
    fi
}

# lead_to PHASE TAG [twins]: the operator walks forward to PHASE doing what
# the tool says; to 'cleanup': on to 'step' and a cleanup that exits 0.
# "Stuck" when the same refusal comes back three times or 30 operations
# are not enough. With "twins" (only when no load runs: the reconciler's
# reads are not one snapshot), old keys must equal their twins on the way
# through dual-read and step-primary, where reads come from the new side.
lead_to() {
    local to=$1 tag=$2 n same=0 last="" msg
    for n in $(seq 30); do
        if [ "${3:-}" = twins ] && { [ "$PH" = dual-read ] || [ "$PH" = step-primary ]; }; then
            twins_check "$tag, $PH" full
        fi
        [ "$PH" = "$to" ] && return 0
        if [ "$PH" = step ]; then
            latest
            if [ -z "$B" ]; then new_backup; op "$tag" migrate backup --out "$B" --quiet; continue; fi
            op "$tag" migrate cleanup --backup "$B"
            [ "$RC" = 0 ] && return 0
        else
            op "$tag" migrate phase "$(next_of "$PH")" --reason walk
        fi
        [ "$RC" = 0 ] && continue
        msg=$(grep -v '^[a-z]*: [0-9]* keys in' "$sd/out" | tail -1 |
            sed -E 's/[0-9a-f-]{36}/ID/g; s/[0-9]+/N/g')
        if [ "$msg" = "$last" ]; then same=$((same + 1)); else same=0; fi
        last=$msg
        [ $same -ge 2 ] && break
        follow 100
    done
    echo "   STUCK in $PH on the way to $to: $last" >>"$sd/ops"
    return 1
}

# twins_check WHAT full|records: the old keys against their new twins.
twins_check() {
    local args=()
    [ "$2" = records ] && args+=(records)
    reconcile twins "${args[@]}" >"$sd/twins" 2>&1
    local u
    u=$(fig keys_unequal "$sd/twins")
    compared=$((compared + $(fig keys_compared "$sd/twins")))
    if [ "$u" != 0 ]; then
        [ "$u" -gt "$seq_unequal" ] && seq_unequal=$u # the same keys, looked at again
        seq_bad=$((seq_bad + 1))
        echo "   UNEQUAL twins ($1, $2): $u" >>"$sd/ops"
        grep '^unequal' "$sd/twins" | head -5 | sed 's/^/     /' >>"$sd/ops"
    fi
}

drain() { # drain SECONDS: until no step is pending or active on the side read
    local end=$((SECONDS + $1))
    look "s$s.drain"
    while [ "$UNFINISHED" != 0 ] && [ $SECONDS -lt $end ]; do
        sleep 0.5
        look "s$s.drain"
    done
}

# check_steps WHAT: the steps on the side the phase reads. A sequence's
# figures are the most either of its two checks saw (the same steps).
FIGS="lost stuck ran_again completed_twice duplicated resurrected failed_early wrong_set completed_without_run"
declare -A seqfig
check_steps() {
    reconcile steps "$sd" phase >"$sd/steps" 2>&1
    local rc=$? k v
    for k in $FIGS; do
        v=$(fig "$k" "$sd/steps")
        [ "$v" -gt "${seqfig[$k]:-0}" ] && seqfig[$k]=$v
    done
    if [ $rc != 0 ]; then
        seq_bad=$((seq_bad + 1))
        echo "   reconcile ($1, phase $PH): problems" >>"$sd/ops"
        grep '^problem' "$sd/steps" | head -12 | sed 's/^/     /' >>"$sd/ops"
    fi
}

# -- the sequences -------------------------------------------------------------
ops_total=0 refusals=0 unexpected=0 advised=0 skipped=0 kills=0 bf_kills=0 compared=0 unequal=0 stuck=0
f_lost=0 f_stuck=0 f_ran_again=0 f_completed_twice=0 f_duplicated=0 f_resurrected=0
f_failed_early=0 f_wrong_set=0 f_completed_without_run=0 resurrected_looks=0
passed=0 failed=0 submitted=0
t_all=$SECONDS
echo "== randomized walk: $seqs sequence(s) of $nops operations, seeds $seed0..$((seed0 + seqs - 1)); $workers workers, ttl ${ttl} ms${repair:+, backfill $repair}${skip:+; LEAVING OUT $skip (WALK_SKIP)}"
for s in $(seq "$seqs"); do
    seed=$((seed0 + s - 1))
    RANDOM=$seed
    sd=$tmp/seq$s
    mkdir -p "$sd/locks"
    touch "$sd/submitted" "$sd/runs.log" "$sd/ops" "$sd/backups"
    rcli FLUSHALL >/dev/null
    ops=0 nb=0 stale=0 bf_done=0 seq_bad=0 seq_unequal=0 PH=job
    t_seq=$SECONDS
    for _ in $(seq "$workers"); do start_worker; done
    submitter &
    spid=$!
    sleep 1
    path=job
    # Half the sequences start later in the walk: the runbook's moves (the
    # tool's advice followed) to a phase drawn at random.
    pick 2
    if [ $R = 0 ]; then
        pick 4
        if ! lead_to "${phases[$((R + 1))]}" prelude; then
            stuck=$((stuck + 1))
            seq_bad=$((seq_bad + 1))
        fi
        path="job>..>$PH"
    fi
    for _ in $(seq "$nops"); do
        random_op
        [ "${path##*>}" = "$PH" ] || path="$path>$PH"
        pick 3
        sleep "0.$((R + 1))"
    done
    walk_ops=$ops
    t_walk=$((SECONDS - t_seq))
    stop_load
    drain "$drain"
    t_drain=$((SECONDS - t_seq - t_walk))
    # Where the phase says the two sides must agree: dual-read and
    # step-primary always; dual-write unless the new side is stale from a
    # return to 'job' (records only, until a backfill merged the collections).
    case $PH in
    dual-read | step-primary) twins_check "end, $PH" full ;;
    dual-write) [ $stale = 0 ] && twins_check "end, $PH" "$([ $bf_done = 1 ] && echo full || echo records)" ;;
    esac
    check_steps "end of the walk"
    fin=""
    if [ "$finish" = 1 ]; then
        if lead_to cleanup lead twins; then fin=" led out in $((ops - walk_ops)) ops;"; else
            fin=" STUCK;"
            stuck=$((stuck + 1))
            seq_bad=$((seq_bad + 1))
        fi
        # A reap as an operator would run it (the workers' reapers pass
        # every ttl/2 too), then the last look.
        op lead reap --timeout-ms $((2 * ttl))
        sleep 1
        drain "$drain"
        check_steps "after the lead-out"
        reconcile twins >"$sd/twins" 2>&1
        if [ "$fin" != " STUCK;" ] && [ "$(fig old_keys "$sd/twins")" != 0 ]; then
            echo "   $(fig old_keys "$sd/twins") old keys left after a cleanup that exited 0" >>"$sd/ops"
            seq_bad=$((seq_bad + 1))
        fi
    fi
    t_fin=$((SECONDS - t_seq))
    stop_workers
    for k in $FIGS; do eval "f_$k=\$((f_$k + ${seqfig[$k]:-0}))"; done
    seqfig=()
    unequal=$((unequal + seq_unequal))
    r=0
    [ -f "$sd/resurrected" ] && r=$(wc -l <"$sd/resurrected")
    if [ "$r" -gt 0 ]; then
        resurrected_looks=$((resurrected_looks + r))
        seq_bad=$((seq_bad + 1))
        echo "   RESURRECTED (seen ended, then pending or active):" >>"$sd/ops"
        head -5 "$sd/resurrected" | sed 's/^/     /' >>"$sd/ops"
    fi
    n=$(sort -u "$sd/submitted" | wc -l)
    submitted=$((submitted + n))
    ops_total=$((ops_total + ops))
    line=$(printf 'seq %d/%d seed %d: %d ops, %d steps, %s;%s %ds (walk %d, drain %d, to the end %d)' \
        "$s" "$seqs" "$seed" "$ops" "$n" "$path" "$fin" $((SECONDS - t_seq)) "$t_walk" "$t_drain" "$t_fin")
    if [ $seq_bad = 0 ]; then
        passed=$((passed + 1))
        echo "   ok   $line"
    else
        failed=$((failed + 1))
        echo "   FAIL $line"
        sed 's/^/        /' "$sd/ops"
        echo "        replay: SEED=$seed WALK_SEQS=1 WALK_OPS=$nops $0 $1"
    fi
    [ -n "${WALK_KEEP:-}" ] || [ $seq_bad != 0 ] || rm -rf "$sd"
done

echo "== figures"
printf '   %-34s %s\n' \
    "sequences" "$seqs" \
    "operations (walk and lead-out)" "$ops_total" \
    "refused (exit 4)" "$refusals" \
    "advice followed" "$advised" \
    "left out (WALK_SKIP=${skip:-})" "$skipped" \
    "unexpected exits" "$unexpected" \
    "workers killed -9 mid-step" "$kills" \
    "backfills killed -9" "$bf_kills" \
    "steps submitted (acked)" "$submitted" \
    "lost (no record, or stuck)" "$((f_lost + f_stuck))" \
    "run twice (at once / again / twice)" "$((f_duplicated + f_ran_again + f_completed_twice)) ($f_duplicated / $f_ran_again / $f_completed_twice)" \
    "resurrected (looks / reconcile)" "$((resurrected_looks + f_resurrected)) ($resurrected_looks / $f_resurrected)" \
    "failed early / wrong set / no run" "$f_failed_early / $f_wrong_set / $f_completed_without_run" \
    "twins compared / unequal" "$compared / $unequal" \
    "stuck (no way out by the tool)" "$stuck" \
    "time" "$((SECONDS - t_all)) s"
echo "== operations by kind"
for k in "${!kinds[@]}"; do printf '   %-34s %s\n' "$k" "${kinds[$k]}"; done | sort
if [ -s "$tmp/refusals" ]; then
    echo "== refusals by message"
    sort "$tmp/refusals" | uniq -c | sort -rn | head -15 | cut -c1-160
fi
echo "sequences: $passed passed, $failed failed"
[ $failed = 0 ]
