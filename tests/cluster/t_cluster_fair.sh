#!/usr/bin/env bash
# One worker, two namespaces on two masters, one slot: a deep queue (150
# steps) and a shallow one (5 steps submitted once the worker is busy with
# the deep one). The worker's claim rounds take turns (cmd_worker.c), so the
# shallow queue drains while the deep one still holds most of its backlog:
# it is not starved behind it.
. "$(dirname "$0")/lib.sh"

set -- $(masters)
D=$(ns_on fd "$1")
S=$(ns_on fs "$2")
tmp=$(mktemp -d "${TMPDIR:-/tmp}"/stepq-cfair.XXXXXX)
trap 'kill $wpid 2>/dev/null; wait $wpid 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$tmp"; rm -f "$out"' EXIT
ns_clear "$D"
ns_clear "$S"
echo "deep $D on $1, shallow $S on $2"

pending() { redis-cli -p "$(ns_owner "$1")" zcard "${1}jobs:pending"; }
completed() { redis-cli -p "$(ns_owner "$1")" scard "${1}jobs:completed"; }

for _ in $(seq 1 150); do $STEPQ --namespace "$D" submit --type t >/dev/null; done
# Registered in both before any step of the shallow one exists.
$STEPQ --namespace "$D,$S" worker --id fair --concurrency 1 -- sh -c 'sleep 0.2' >"$tmp/worker.log" 2>&1 &
wpid=$!

check "the worker is busy with the deep queue" '
    for _ in $(seq 1 200); do [ "$(completed "$D")" -ge 5 ] && break; sleep 0.05; done
    [ "$(completed "$D")" -ge 5 ]'
for _ in 1 2 3 4 5; do $STEPQ --namespace "$S" submit --type t >/dev/null; done
check "the shallow queue drains while the deep one still holds most of its backlog" '
    for _ in $(seq 1 750); do [ "$(completed "$S")" = 5 ] && break; sleep 0.02; done
    echo "shallow: $(completed "$S") of 5 completed; deep: $(pending "$D") of 150 still pending"
    [ "$(completed "$S")" = 5 ] && [ "$(pending "$D")" -ge 100 ]'
kill $wpid 2>/dev/null
wait $wpid 2>/dev/null
ns_clear "$D"
ns_clear "$S"
finish
