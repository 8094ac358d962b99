#!/usr/bin/env bash
# abuse.sh - `stepq serve` under abuse, and the secrets of its neighbours
# (database 118; a redis-server of its own for the password cases): the
# auth rules at startup, --auth-reads, claim tokens hidden from readers
# without the token, a 431 that answers JSON, the per-address connection
# limit, the deadline for a whole request head however its bytes trickle,
# the worker's scrubbed environment, and the Redis password from the
# environment or a file.
. "$(dirname "$0")/lib.sh"
TOKEN=abuse-test-token-0123456789
export STEPQ_API_TOKEN=$TOKEN
A=(-H "Authorization: Bearer $TOKEN")

# --- the auth rules at startup ---------------------------------------------
STEPQ_API_TOKEN=short-token-15b "$STEPQ" serve --listen 127.0.0.1:0 2>"$tmp/short.err" &
p=$!; sleep 0.3; kill $p 2>/dev/null; wait $p; rc=$?
expect "a token under 16 bytes: exit 2" is "$rc" 2
expect "which says how long it must be" grep -q "STEPQ_API_TOKEN is 15 bytes; use 16 or more" "$tmp/short.err"
"$STEPQ" serve --listen 0.0.0.0:0 --no-auth 2>"$tmp/open.err" &
p=$!; sleep 0.3; kill $p 2>/dev/null; wait $p; rc=$?
expect "--no-auth on 0.0.0.0: exit 2" is "$rc" 2
expect "which names the address and the way out" grep -q "\-\-no-auth on '0.0.0.0', which is not a loopback address" "$tmp/open.err"
"$STEPQ" serve --listen 127.0.0.1:0 --no-auth --auth-reads 2>"$tmp/both.err" &
p=$!; sleep 0.3; kill $p 2>/dev/null; wait $p; rc=$?
expect "--no-auth with --auth-reads: exit 2" is "$rc" 2

# --- claim tokens and --auth-reads -------------------------------------------
id=$("$STEPQ" submit --type abuse)
claim=$("$STEPQ" claim --worker abuse-w)
# A registered worker (its record holds an instance token); no step is
# pending for it to take.
"$STEPQ" worker --id abuse-reg --heartbeat-ttl-ms 5000 -- sleep 30 2>/dev/null &
servers+=($!)
start_server "$tmp/serve.log" --max-per-address 4 --head-timeout 2
for _ in $(seq 50); do [ "$("$STEPQ" workers | jq 'map(select(.id == "abuse-reg")) | length')" = 1 ] && break; sleep 0.1; done
expect "GET a claimed step without the token: 200" is "$(req GET "/steps/$id")" 200
expect "its claim token is not shown" json "j['status'] == 'active' and 'token' not in j"
expect "GET it with the token: the claim token is there" sh -c "[ \"\$(curl -s -H 'Authorization: Bearer $TOKEN' '$url/steps/$id' | jq -r .token)\" = '$(jq -r .token <<<"$claim")' ]"
W='.workers | map(select(.id == "abuse-reg"))[0]'
expect "/workers without the token hides a worker's instance token" sh -c "curl -s '$url/workers' | jq -e '$W | has(\"instance\") | not'"
expect "/workers with the token shows it" sh -c "curl -s -H 'Authorization: Bearer $TOKEN' '$url/workers' | jq -e '$W | has(\"instance\")'"
expect "the console's feed never shows it" sh -c "curl -s -H 'Authorization: Bearer $TOKEN' '$url/console/feed' | jq -e '.workers | map(select(.id == \"abuse-reg\"))[0] | has(\"instance\") | not'"

# --- a 431 answers JSON -------------------------------------------------------
big=$(head -c 20000 /dev/zero | tr '\0' a)
expect "a 20 KB header: 431" is "$(req GET /health -H "X-Big: $big")" 431
expect "431 answers JSON" sh -c "grep -qi '^Content-Type: application/json' '$tmp/hdr' && jq -e '.error | test(\"request head is larger than 16 KiB\")' '$tmp/body'"

# --- the per-address limit ------------------------------------------------------
# Four idle connections from 127.0.0.1 (--max-per-address 4) and a fifth;
# then /health from 127.0.0.2 still answers.
python3 - "$port" >"$tmp/limit.out" <<'PY' &
import socket, sys, time
port = int(sys.argv[1])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
time.sleep(0.3)
fifth = socket.create_connection(("127.0.0.1", port))
fifth.settimeout(2)
try:
    fifth.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    got = fifth.recv(100)
    print("fifth:", "answered" if got else "closed")
except OSError:
    print("fifth: closed")
time.sleep(1.5)
PY
lp=$!
sleep 0.8
expect "/health from another address answers while one holds its limit" is "$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.2 "$url/health")" 200
wait $lp
expect "the fifth connection from one address is refused" grep -qx "fifth: closed" "$tmp/limit.out"

# --- the head deadline ----------------------------------------------------------
# A byte every 0.4 s keeps the idle timeout (30 s) from ever firing; the
# head deadline (--head-timeout 2) cuts it anyway.
python3 - "$port" >"$tmp/trickle.out" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))
t0 = time.time()
head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
closed = None
for b in head:
    try:
        s.sendall(bytes([b]))
    except OSError:
        closed = time.time() - t0
        break
    s.settimeout(0.4)
    try:
        if s.recv(100) == b"":
            closed = time.time() - t0
            break
    except socket.timeout:
        pass
    except OSError:
        closed = time.time() - t0
        break
    if time.time() - t0 > 8:
        break
print("closed after %.1f s" % closed if closed else "still open after 8 s")
PY
expect "a trickled head is cut at its deadline" grep -qE "^closed after [23]\.[0-9] s$" "$tmp/trickle.out"
cat "$tmp/trickle.out"
expect "a normal request on a kept-alive connection is not cut" sh -c "curl -s -o /dev/null -w '%{http_code}\n' '$url/health' --next '$url/health' | sort -u | grep -qx 200"
expect "/metrics counts the cut heads" sh -c "curl -s '$url/metrics' | grep -qE '^stepq_http_head_timeouts_total [1-9]'"
kill -TERM "$pid"; wait "$pid"

start_server "$tmp/reads.log" --auth-reads
expect "--auth-reads: GET /health without the token 401" is "$(req GET /health)" 401
expect "--auth-reads: GET /health with it 200" is "$(req GET /health "${A[@]}")" 200
expect "--auth-reads: the page too" is "$(req GET /)" 401
kill -TERM "$pid"; wait "$pid"

# --- the worker's children and the Redis password -------------------------------
srv=$(mktemp -d)
trap 'cleanup; "$(dirname "$0")/../redis.sh" stop "$srv"' EXIT
REDIS_EXTRA="--requirepass s3cret-pw" "$(dirname "$0")/../redis.sh" start "$srv" >/dev/null
. "$srv/env"
plain=redis://127.0.0.1:$REDIS_PORT/0
expect "no password: refused by Redis" sh -c "! REDIS_URL='$plain' '$STEPQ' submit --type pw >/dev/null 2>&1"
expect "STEPQ_REDIS_PASSWORD gives it" sh -c "REDIS_URL='$plain' STEPQ_REDIS_PASSWORD=s3cret-pw '$STEPQ' submit --type pw >/dev/null"
printf 's3cret-pw\n' >"$tmp/pw"
chmod 600 "$tmp/pw"
expect "STEPQ_REDIS_PASSWORD_FILE gives it" sh -c "REDIS_URL='$plain' STEPQ_REDIS_PASSWORD_FILE='$tmp/pw' '$STEPQ' submit --type pw >/dev/null"
expect "a missing password file says so" sh -c "REDIS_URL='$plain' STEPQ_REDIS_PASSWORD_FILE='$tmp/nope' '$STEPQ' submit 2>&1 | grep -q 'cannot read the Redis password from STEPQ_REDIS_PASSWORD_FILE'"

run_worker() { # run_worker OUT [worker args]: one step, the child's env in OUT
    local out=$1; shift
    REDIS_URL="redis://:s3cret-pw@127.0.0.1:$REDIS_PORT/0" "$STEPQ" submit --type envdump >/dev/null
    REDIS_URL="redis://:s3cret-pw@127.0.0.1:$REDIS_PORT/0" STEPQ_API_TOKEN=$TOKEN STEPQ_REDIS_PASSWORD=x \
        "$STEPQ" worker --id "env-$RANDOM" --heartbeat-ttl-ms 2000 "$@" -- sh -c "env >'$out'" 2>/dev/null &
    local w=$!
    for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
    sleep 0.2
    kill -TERM $w; wait $w
}
run_worker "$tmp/env1"
expect "a step's command gets no STEPQ_API_TOKEN" sh -c "! grep -q '^STEPQ_API_TOKEN=' '$tmp/env1'"
expect "nor a REDIS_URL holding a password" sh -c "! grep -q '^REDIS_URL=' '$tmp/env1'"
expect "nor STEPQ_REDIS_PASSWORD" sh -c "! grep -q '^STEPQ_REDIS_PASSWORD=' '$tmp/env1'"
expect "but its own variables" grep -q '^STEPQ_STEP_ID=' "$tmp/env1"
run_worker "$tmp/env2" --pass-env REDIS_URL
expect "--pass-env REDIS_URL passes it" grep -q "^REDIS_URL=redis://:s3cret-pw@" "$tmp/env2"
expect "and only it" sh -c "! grep -q '^STEPQ_API_TOKEN=' '$tmp/env2'"

finish
