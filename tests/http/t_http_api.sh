#!/usr/bin/env bash
# t_http_api.sh - `stepq serve` driven with curl against a real redis-server:
# startup flags, status codes and JSON shapes of the step endpoints, auth,
# body limits, bad bodies, request metrics, concurrent submitters and the
# SIGTERM drain.
. "$(dirname "$0")/lib.sh"

# --- startup and flags ----------------------------------------------------------
"$STEPQ" serve --listen 127.0.0.1:0 >/dev/null 2>"$tmp/noauth.err"
expect "serve without a token exits 2" is $? 2
expect "and names STEPQ_API_TOKEN" grep -q STEPQ_API_TOKEN "$tmp/noauth.err"
for bad in 'nope' '127.0.0.1' '127.0.0.1:99999' '1.2.3:80' '[::1:80' ':8080'; do
    STEPQ_API_TOKEN=x "$STEPQ" serve --listen "$bad" 2>/dev/null
    expect "--listen '$bad' exits 2" is $? 2
done
STEPQ_API_TOKEN=x "$STEPQ" serve --threads 0 2>/dev/null
expect "--threads 0 exits 2" is $? 2

export STEPQ_API_TOKEN=t0ken-for-tests-16b
start_server "$tmp/serve.log"
expect "serve starts and prints its port" test -n "$port"

# --- health ---------------------------------------------------------------------
expect "GET /health 200" is "$(req GET /health)" 200
expect "/health has the phase" json 'j == {"status": "ok", "redis": "up", "phase": "job", "pin": None}'
expect "HEAD /health 200" is "$(curl -s -o /dev/null -w '%{http_code}' -I "$url/health")" 200

# --- auth -----------------------------------------------------------------------
submits=0
expect "POST /steps without a token 401" is "$(req POST /steps -d '{"type":"a"}')" 401
expect "401 says how to authenticate" json "'Authorization: Bearer' in j['error']"
expect "401 has WWW-Authenticate" hdr 'WWW-Authenticate: Bearer'
expect "wrong token 401" is "$(req POST /steps -H 'Authorization: Bearer t0ken-for-testz' -d '{}')" 401
expect "wrong token says invalid" json "j['error'].startswith('invalid bearer token')"
expect "token prefix 401" is "$(req POST /steps -H 'Authorization: Bearer t0ken' -d '{}')" 401
expect "longer token 401" is "$(req POST /steps -H 'Authorization: Bearer t0ken-for-tests-16b1' -d '{}')" 401
expect "Basic scheme 401" is "$(req POST /steps -H 'Authorization: Basic dDBrZW4=' -d '{}')" 401
expect "cancel without a token 401" is "$(req POST /steps/x1/cancel)" 401

# --- submit and get -------------------------------------------------------------
st=$(req POST /steps "${AUTH[@]}" -H 'Content-Type: application/json' \
    -d '{"type":"resize","priority":5,"requires":["gpu","x86"],"payload":{"w":640},"max_attempts":2}')
expect "POST /steps 201" is "$st" 201
submits=$((submits + 1))
id=$(python3 -I -S -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$tmp/body")
expect "201 body is {id}" json "list(j) == ['id'] and len(j['id']) == 36"
expect "201 has Location" hdr "Location: /steps/$id"
expect "GET /steps/{id} 200" is "$(req GET "/steps/$id")" 200
"$STEPQ" get "$id" >"$tmp/cli.json"
expect "same object as 'stepq get'" json "j == json.load(open('$tmp/cli.json'))"
expect "fields as submitted" json "j['type'] == 'resize' and j['priority'] == 5 and j['requires'] == 'gpu,x86' and j['payload'] == {'w': 640} and j['max_attempts'] == 2"
st=$(req POST /steps "${AUTH[@]}" -d '{}')
expect "POST {} takes the defaults" is "$st" 201
submits=$((submits + 1))
expect "GET missing step 404" is "$(req GET /steps/no-such-step)" 404
expect "404 names the step" json "j['error'] == \"step 'no-such-step' does not exist\""
expect "GET bad id 400" is "$(req GET /steps/bad%3Aid)" 400
expect "bad id says what to use" json "j['error'].startswith(\"invalid step id 'bad:id'; use\")"

# --- list -----------------------------------------------------------------------
expect "GET /steps?state=pending 200" is "$(req GET "/steps?state=pending&limit=5")" 200
expect "list shape" json "j['state'] == 'pending' and j['limit'] == 5 and '$id' in j['ids']"
expect "GET /steps defaults to pending" is "$(req GET /steps)" 200
expect "default limit 100" json "j['state'] == 'pending' and j['limit'] == 100 and len(j['ids']) == 2"
expect "bad state 400" is "$(req GET "/steps?state=done")" 400
expect "bad state message" json "j['error'] == \"invalid state 'done'; use pending, active, completed or failed\""
expect "limit 0 400" is "$(req GET "/steps?limit=0")" 400
expect "unknown parameter 400" is "$(req GET "/steps?stat=active")" 400

# --- cancel ---------------------------------------------------------------------
expect "cancel 200" is "$(req POST "/steps/$id/cancel" "${AUTH[@]}")" 200
expect "cancel shape" json "j == {'id': '$id', 'cancelled': True}"
expect "cancel again 409" is "$(req POST "/steps/$id/cancel" "${AUTH[@]}")" 409
expect "cancel missing 404" is "$(req POST /steps/no-such-step/cancel "${AUTH[@]}")" 404
expect "GET on cancel 405" is "$(req GET "/steps/$id/cancel")" 405
expect "405 has Allow: POST" hdr 'Allow: POST'

# --- workers --------------------------------------------------------------------
"$STEPQ" claim --worker http-w1 >/dev/null
expect "GET /workers 200" is "$(req GET /workers)" 200
expect "workers lists the claimer" json "any(w.get('id') == 'http-w1' or w.get('worker') == 'http-w1' for w in j['workers'])"

# --- methods and paths ----------------------------------------------------------
expect "DELETE /steps 405" is "$(req DELETE /steps)" 405
expect "405 Allow lists GET, HEAD, POST" hdr 'Allow: GET, HEAD, POST'
expect "PUT /health 405" is "$(req PUT /health -d x)" 405
expect "unknown path 404" is "$(req GET /nope)" 404
expect "404 is JSON with error" json "j['error'].startswith(\"no such path '/nope'\")"

# --- bad bodies -----------------------------------------------------------------
bad() { req POST /steps "${AUTH[@]}" --data-binary "$1"; }
expect "invalid JSON 400" is "$(bad '{"type": }')" 400
expect "400 says line and column" json "j['error'].startswith('invalid JSON at line 1, column 10: ')"
expect "multi-line position" is "$(bad $'{\n  "type": "a",\n  oops\n}')" 400
expect "line 3 reported" json "j['error'].startswith('invalid JSON at line 3, column ')"
expect "empty body 400" is "$(bad '')" 400
expect "array body 400" is "$(bad '[1]')" 400
expect "array body says object" json "'must be a JSON object' in j['error']"
expect "unknown field 400" is "$(bad '{"typ":"a"}')" 400
expect "unknown field named" json "j['error'].startswith(\"unknown field 'typ'\")"
expect "priority not a number 400" is "$(bad '{"priority":"5"}')" 400
expect "priority out of range 400" is "$(bad '{"priority":1000001}')" 400
expect "max_attempts 0 400" is "$(bad '{"max_attempts":0}')" 400
expect "bad type name 400 (library check)" is "$(bad '{"type":"a:b"}')" 400
expect "duplicate key 400" is "$(bad '{"type":"a","type":"b"}')" 400
deep=$(python3 -I -S -c 'print("{\"payload\":" + "["*65 + "]"*65 + "}")')
expect "JSON deeper than 64 400" is "$(bad "$deep")" 400
expect "depth message" json "'nested deeper than 64' in j['error']"
ok=$(python3 -I -S -c 'print("{\"payload\":" + "["*60 + "]"*60 + "}")')
expect "JSON 61 deep is fine" is "$(bad "$ok")" 201
submits=$((submits + 1))

# --- body limits ----------------------------------------------------------------
python3 -I -S -c '
import sys
n = 1024 * 1024
head, tail = "{\"payload\":\"", "\"}"
open(sys.argv[1], "w").write(head + "a" * (n - len(head) - len(tail)) + tail)
open(sys.argv[2], "w").write(head + "a" * (n + 1 - len(head) - len(tail)) + tail)
' "$tmp/exact.json" "$tmp/over.json"
expect "exactly 1 MiB is accepted" is "$(req POST /steps "${AUTH[@]}" --data-binary @"$tmp/exact.json")" 201
submits=$((submits + 1))
expect "1 MiB + 1 is 413" is "$(req POST /steps "${AUTH[@]}" --data-binary @"$tmp/over.json")" 413
expect "413 says what to do" json "j['error'] == 'the body is larger than 1 MiB; send a smaller one'"
expect "chunked upload over 1 MiB is 413" \
    is "$(req POST /steps "${AUTH[@]}" -H 'Transfer-Encoding: chunked' --data-binary @"$tmp/over.json")" 413
expect "413 before auth is still 401" is "$(req POST /steps --data-binary @"$tmp/over.json")" 401

# --- request metrics ------------------------------------------------------------
expect "GET /metrics 200" is "$(req GET /metrics)" 200
expect "text format content type" hdr 'Content-Type: text/plain; version=0.0.4'
m=$tmp/body
expect "submits counted" grep -qx "stepq_http_requests_total{op=\"submit\",code=\"201\"} $submits" "$m"
expect "401s counted" grep -qx 'stepq_http_requests_total{op="submit",code="401"} [0-9]*' "$m"
expect "413s counted" grep -q 'stepq_http_requests_total{op="submit",code="413"} 2' "$m"
expect "latency histogram" grep -qx "stepq_http_request_duration_seconds_count{op=\"submit\"} [0-9]*" "$m"
expect "histogram +Inf bucket" grep -q 'stepq_http_request_duration_seconds_bucket{op="get",le="+Inf"} 2' "$m"

# --- concurrency: 8 submitters, 20 steps each, every id readable ------------------
pending_before=$(rcli ZCARD jobs:pending)
for w in 1 2 3 4 5 6 7 8; do
    (for i in $(seq 1 20); do
        curl -s -X POST "${AUTH[@]}" "${CT[@]}" -d "{\"type\":\"c$w\",\"payload\":{\"i\":$i}}" "$url/steps"
        echo
    done >"$tmp/ids.$w") &
done
wait_submitters() { for j in $(jobs -p); do [ "$j" = "$pid" ] || wait "$j"; done; }
wait_submitters
cat "$tmp"/ids.? | python3 -I -S -c 'import json,sys; [print(json.loads(l)["id"]) for l in sys.stdin if l.strip()]' >"$tmp/ids" 2>/dev/null
expect "160 distinct ids from 8 parallel submitters" is "$(sort -u "$tmp/ids" | wc -l)" 160
# One curl, many URLs (one connection): each answer's status on a line of its own.
reads=$(curl -s -w '\n%{http_code}\n' $(sed "s|^|$url/steps/|" "$tmp/ids") | grep -c '^200$')
expect "every id readable" is "$reads" 160
expect "all 160 pending in Redis" is "$(rcli ZCARD jobs:pending)" $((pending_before + 160))

# --- SIGTERM drain: a slow request in flight completes, then exit 0 --------------
python3 -I -S -c 'import sys; open(sys.argv[1], "w").write("{\"type\":\"slow\",\"payload\":\"" + "s" * 8000 + "\"}")' "$tmp/slow.json"
curl -s -o "$tmp/slow.out" -w '%{http_code}' --limit-rate 2K -X POST "${AUTH[@]}" "${CT[@]}" \
    --data-binary @"$tmp/slow.json" "$url/steps" >"$tmp/slow.code" &
slow=$!
sleep 1
expect "the server is announced" is "$(rcli HLEN stepq:procs)" 1
kill -TERM "$pid"
sleep 0.3
curl -s -o /dev/null --max-time 2 "$url/health"
expect "no new connections while draining" test $? -ne 0
wait "$slow"
expect "the slow request completed with 201" is "$(cat "$tmp/slow.code")" 201
wait "$pid"
expect "serve exits 0 after SIGTERM" is $? 0
expect "log says drained and stopped" sh -c "grep -q 'draining 1 request' '$tmp/serve.log' && grep -q 'stopped' '$tmp/serve.log'"
slow_id=$(python3 -I -S -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$tmp/slow.out")
expect "the slow step exists" sh -c "'$STEPQ' get '$slow_id' | grep -q '\"type\":\"slow\"'"
expect "the server withdrew from the live processes" is "$(rcli HLEN stepq:procs)" 0

finish
