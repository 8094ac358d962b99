#!/usr/bin/env bash
# The registry of namespaces ({stepq}:namespaces) lists a namespace until it
# is forgotten: `stepq migrate forget-namespace NS` takes it out once nothing
# uses it, and refuses (exit 4) while keys of its queue, a live process or a
# registered worker remain. On a cluster the registry lives on its own
# slot's master, reached through MOVED from the namespace's one.
. "$(dirname "$0")/lib.sh"

set -- $(masters)
F=$(ns_on rg "$1")
tmp=$(mktemp -d "${TMPDIR:-/tmp}"/stepq-creg.XXXXXX)
trap 'kill $wpid 2>/dev/null; wait $wpid 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$tmp"; rm -f "$out"' EXIT
ns_clear "$F"
echo "namespace $F on $1"
listed() { $STEPQ migrate status --all-namespaces --json | jq -e --arg n "$1" '[.namespaces[].namespace] | index($n) != null' >/dev/null; }

$STEPQ --namespace "$F" submit --type t >/dev/null
check "a submit lists the namespace" 'listed "$F"'
check_code 4 "forget is refused while the queue holds keys, and says so" '
    $STEPQ migrate forget-namespace "$F" 2>"$tmp/e"; rc=$?
    cat "$tmp/e"
    grep -q "still holds 2 keys of its queue" "$tmp/e" && (exit $rc)'
check "the namespace is still listed" 'listed "$F"'
ns_clear "$F"
# A worker (heartbeat ttl 500 ms, so its announcement lives 1 s).
$STEPQ --namespace "$F" worker --id rgw --heartbeat-ttl-ms 500 -- true >"$tmp/worker.log" 2>&1 &
wpid=$!
procs() { $STEPQ --namespace "$F" migrate status --json | jq '.processes | length'; }
for _ in $(seq 1 100); do [ "$(procs)" -ge 1 ] && break; sleep 0.05; done
check_code 4 "forget is refused while a live process announces itself (no queue key left)" '
    $STEPQ migrate forget-namespace "$F" 2>"$tmp/e"; rc=$?
    cat "$tmp/e"
    grep -q "1 live stepq process announces itself" "$tmp/e" && (exit $rc)'
kill -9 $wpid
wait $wpid 2>/dev/null
for _ in $(seq 1 100); do [ "$(procs)" = 0 ] && break; sleep 0.05; done
check_code 4 "then while the dead worker is still registered" '
    $STEPQ migrate forget-namespace "$F" 2>"$tmp/e"; rc=$?
    cat "$tmp/e"
    grep -q "1 worker is still registered" "$tmp/e" && (exit $rc)'
check "the reaper removes the dead worker" '$STEPQ --namespace "$F" reap --timeout-ms 100 >/dev/null'
check "with nothing left in use, forget takes it out of the registry" '
    $STEPQ migrate forget-namespace "$F"
    ! listed "$F"'
check_code 3 "forgetting it again: not registered (exit 3)" '$STEPQ migrate forget-namespace "$F"'
check_code 2 "--namespace instead of the argument is a usage error" '$STEPQ --namespace "$F" migrate forget-namespace'
check_code 2 "forget-namespace does not take --all-namespaces" '$STEPQ migrate forget-namespace --all-namespaces'
$STEPQ --namespace "$F" submit --type t >/dev/null
check "its next submit lists it again" 'listed "$F"'
ns_clear "$F"
$STEPQ migrate forget-namespace "$F" >/dev/null
finish
