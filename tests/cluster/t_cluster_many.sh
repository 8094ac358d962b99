#!/usr/bin/env bash
# Many queues, one fleet, on a real cluster (issue 12): three namespaces on
# the three masters, served by ONE worker (a lane and a connection per
# namespace, each to its own master) while they are submitted to; the
# registry finds them, `migrate status --all-namespaces` names each one's
# master; the whole migration walk runs with --all-namespaces (three at
# once), a refusal stops it; every step is completed exactly once.
. "$(dirname "$0")/lib.sh"
d=$(mktemp -d "${TMPDIR:-/tmp}"/stepq-cmany.XXXXXX)
cleanup() {
    [ -f "$d/submitter.pid" ] && stop_submitter "$d"
    [ -f "$d/worker.pids" ] && stop_workers "$d"
    rm -rf "$d" "$out"
}
trap cleanup EXIT
mkdir -p "$d/locks"
touch "$d/runs.log" "$d/submitted"

set -- $(masters)
[ $# = 3 ] || { echo "expected 3 masters, got: $*" >&2; exit 1; }
A=$(ns_on qm "$1") B=$(ns_on qm "$2") C=$(ns_on qm "$3")
for ns in "$A" "$B" "$C"; do ns_clear "$ns"; done
# The registry holds the namespaces of the other cluster tests too (a
# namespace stays listed after its keys are gone): start from an empty one.
redis-cli -c -p "${CLUSTER_PORTS%% *}" del '{stepq}:namespaces' >/dev/null
echo "namespaces: $A on $1, $B on $2, $C on $3"

for ns in "$A" "$B" "$C"; do
    mkdir -p "$d/$ns"
    for _ in $(seq 1 20); do $STEPQ --namespace "$ns" submit --type t --payload '{}'; done >"$d/$ns/submitted"
done
# One worker for the three namespaces, and a submitter that goes round them.
$STEPQ worker --namespace "$A,$B,$C" --id wm --concurrency 6 --heartbeat-ttl-ms 3000 \
    -- bash "$(dirname "$0")/../chaos/step.sh" "$d" >>"$d/worker1.log" 2>&1 &
echo $! >"$d/worker.pids"
(
    trap 'exit 0' TERM
    while :; do
        for ns in "$A" "$B" "$C"; do
            # Straight to the file: the TERM trap runs only after the
            # submit returned, so no id is cut off.
            $STEPQ --namespace "$ns" submit --type t --payload '{"n":1}' >>"$d/$ns/submitted" \
                2>>"$d/submit.err"
        done
        sleep 0.1
    done
) &
echo $! >"$d/submitter.pid"

check "the registry lists the three namespaces (and nothing else)" '
    [ "$($STEPQ migrate status --all-namespaces --json | jq -r ".namespaces | map(.namespace) | sort | join(\" \")")" = \
      "$(printf "%s\n" "$A" "$B" "$C" | sort | tr "\n" " " | sed "s/ $//")" ]'
check "status --all-namespaces names each namespace's own master" '
    $STEPQ migrate status --all-namespaces --json >$d/st.json
    for ns in "$A" "$B" "$C"; do
        [ "$(jq -r --arg n "$ns" ".namespaces[] | select(.namespace == \$n) | .server" $d/st.json)" = \
          "127.0.0.1:$(ns_owner "$ns")" ] || { cat $d/st.json; exit 1; }
    done'
check "the one worker is registered in each namespace, on its master" '
    for ns in "$A" "$B" "$C"; do
        for _ in $(seq 1 50); do $STEPQ --namespace "$ns" workers | grep -q wm && break; sleep 0.1; done
        $STEPQ --namespace "$ns" workers | grep -q wm
    done'
check "the worker holds a connection to each of the three masters" '
    for p in $(masters); do
        redis-cli -p "$p" client list | grep -q "name=stepq-worker" || { echo "none on $p"; exit 1; }
    done'
check "it runs steps of the three namespaces" '
    for _ in $(seq 1 100); do
        n=0
        for ns in "$A" "$B" "$C"; do
            grep -qFf <(head -20 "$d/$ns/submitted") <(awk "\$1 == \"end\" {print \$2}" "$d/runs.log") && n=$((n + 1))
        done
        [ $n = 3 ] && exit 0
        sleep 0.2
    done; exit 1'

# The walk, every namespace at once, under that load.
check_code 4 "a refused move stops --all-namespaces at the first namespace (exit 4)" \
    '$STEPQ migrate phase dual-read --all-namespaces'
check "... and the others were not touched" '
    for ns in "$A" "$B" "$C"; do [ "$($STEPQ --namespace "$ns" migrate phase)" = job ]; done'
mkdir "$d/bk1" "$d/bk2"
step_all() { # a migrate command over every namespace, three at a time
    echo "+ migrate $* --all-namespaces --parallel 3" >>"$d/walk.log"
    $STEPQ migrate "$@" --all-namespaces --parallel 3 >>"$d/walk.log" 2>&1
}
check "the walk to 'step' and cleanup, --all-namespaces --parallel 3, under load" '
    step_all phase dual-write && step_all backfill && step_all verify &&
    step_all phase dual-read && step_all verify && step_all phase step-primary &&
    step_all backup --out "$d/bk1" --side old && step_all phase step &&
    step_all backup --out "$d/bk2/%n.old" --side old && step_all cleanup --backup "$d/bk2/%n.old" ||
    { cat "$d/walk.log"; exit 1; }
    grep -c " done " "$d/walk.log"'
check "each namespace is in step, with no old key left" '
    $STEPQ migrate status --all-namespaces --json >$d/st.json
    [ "$(jq -r "[.namespaces[] | select(.phase == \"step\" and .old_keys == 0)] | length" $d/st.json)" = 3 ] ||
        { cat $d/st.json; exit 1; }'
check "one backup file per namespace" '[ "$(ls $d/bk1 | wc -l)" = 3 ] && [ "$(ls $d/bk2 | wc -l)" = 3 ]'

stop_submitter "$d"
cat "$d/$A/submitted" "$d/$B/submitted" "$d/$C/submitted" >"$d/submitted"
for ns in "$A" "$B" "$C"; do
    check "every step of $ns completed" "drained '$ns' '$d/$ns' 60"
done
check "each step ran to its end exactly once, none at the same time twice" "accounted '$d'"
echo "  $(sort -u "$d/submitted" | wc -l) steps in three namespaces"
stop_workers "$d"
check "the worker deregistered from every namespace" '
    for ns in "$A" "$B" "$C"; do ! $STEPQ --namespace "$ns" workers | grep -q wm; done'
for ns in "$A" "$B" "$C"; do ns_clear "$ns"; done
finish
