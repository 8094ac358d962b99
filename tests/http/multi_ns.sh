#!/usr/bin/env bash
# multi_ns.sh - one `stepq serve` for several namespaces (issue 12): each
# under /q/{namespace}/, the first also on the old paths; a step is found in
# its own namespace only; health is per namespace; an unserved namespace is
# a 404 that says what to do; the console and /metrics are served once.
# Database 106.
. "$(dirname "$0")/lib.sh"

A='{t106a}:' B='{t106b}:'
QA=/q/%7Bt106a%7D: QB=/q/%7Bt106b%7D:
export STEPQ_API_TOKEN=t0ken-for-tests-16b
start_server "$tmp/serve.log" --namespace "$A,$B"

expect "serve starts with two namespaces" [ -n "$port" ]
st=$(req POST "$QA/steps" "${AUTH[@]}" -d '{"type":"a"}')
expect "POST /q/A/steps 201" is "$st" 201
ida=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$tmp/body")
st=$(req POST "$QB/steps" "${AUTH[@]}" -d '{"type":"b"}')
expect "POST /q/B/steps 201" is "$st" 201
idb=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$tmp/body")
expect "Location names the queue's path" hdr "Location: $QB/steps/$idb"

expect "A's step is in A's keys" [ "$(rcli EXISTS "{t106a}:job:$ida")" = 1 ]
expect "B's step is in B's keys" [ "$(rcli EXISTS "{t106b}:job:$idb")" = 1 ]
expect "GET /q/A/steps/ID 200" is "$(req GET "$QA/steps/$ida")" 200
expect "... the step of A" json "j['id'] == '$ida' and j['type'] == 'a'"
expect "GET /q/B/steps/ID-of-A 404: namespaces are apart" is "$(req GET "$QB/steps/$ida")" 404
expect "the old path serves the first namespace" is "$(req GET "/steps/$ida")" 200
expect "... and not the second" is "$(req GET "/steps/$idb")" 404
expect "GET /q/B/steps lists B's pending" is "$(req GET "$QB/steps")" 200
expect "... B's step only" json "[s['id'] if isinstance(s, dict) else s for s in j] == ['$idb'] or j == ['$idb'] or '$idb' in json.dumps(j) and '$ida' not in json.dumps(j)"

expect "an unserved namespace is 404" is "$(req GET /q/%7Bt106x%7D:/steps)" 404
expect "... which says how to serve it" json "'not served here' in j['error'] and '--namespace' in j['error']"
expect "a POST to an unserved namespace needs the token first (401)" \
    is "$(req POST /q/%7Bt106x%7D:/steps -d '{}')" 401
expect "/q/A/metrics is 404 (served once)" is "$(req GET "$QA/metrics")" 404
expect "/metrics is served" is "$(req GET /metrics)" 200

# Health per namespace: move B only.
"$STEPQ" --namespace "$B" migrate phase dual-write >/dev/null
expect "health of B says dual-write" bash -c "
    for _ in \$(seq 1 50); do
        curl -s '$url$QB/health/redis-migration' | grep -q '\"dual-write\"' && exit 0; sleep 0.1
    done; exit 1"
expect "health of A still says job" is "$(req GET "$QA/health/redis-migration")" 200
expect "... job" json "j['phase']['phase'] == 'job' if isinstance(j.get('phase'), dict) else j['phase'] == 'job'"
expect "cancel in B through its path" is "$(req POST "$QB/steps/$idb/cancel" "${AUTH[@]}")" 200
expect "serve is listed live in each namespace's status" bash -c "
    '$STEPQ' --namespace '$A' migrate status | grep -q ' serve ' &&
    '$STEPQ' --namespace '$B' migrate status | grep -q ' serve '"
kill -TERM "$pid"
expect "serve stops on SIGTERM" bash -c "for _ in \$(seq 1 50); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1"
finish
