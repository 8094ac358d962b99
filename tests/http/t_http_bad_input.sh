#!/usr/bin/env bash
# t_http_bad_input.sh - rows of docs/bad-input.md that t_http_api.sh does not
# cover: every bad request gets its status and a JSON {"error"} body that
# says what to do, including bodies that are not UTF-8 (found by fuzzing).
. "$(dirname "$0")/lib.sh"

export STEPQ_API_TOKEN=t0ken-for-tests-16b
start_server "$tmp/serve.log"
expect "serve starts" test -n "$port"
bad() { req POST /steps "${AUTH[@]}" --data-binary "$1"; }
err() { json "j['error'].startswith(\"$1\")"; }

# Found by fuzz_step_json: jansson quotes the bytes near the defect, a cut
# UTF-8 character among them; the server answered 500 with no body.
expect "invalid escape before bad UTF-8 400" is "$(bad $'{"payload":["\\ude0\xc3"]}')" 400
expect "its error is JSON and says where" err 'invalid JSON at line 1, column '
expect "a field name cut mid-character 400" \
    is "$(bad $'{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9":1}')" 400
expect "unknown field named" err "unknown field 'aaaa"
expect "invalid UTF-8 body 400" is "$(bad $'{"type":"\xff"}')" 400
expect "invalid UTF-8 names the byte" err 'invalid JSON at line 1, column '
expect "JSON null body 400" is "$(bad 'null')" 400
expect "requires of numbers 400" is "$(bad '{"requires":[1]}')" 400
expect "requires message" err "field 'requires' must be a string"
expect "max_attempts over 1000 400" is "$(bad '{"max_attempts":1001}')" 400
expect "max_attempts message" err "invalid max_attempts '1001'; use 1 to 1000"
expect "priority message" is "$(bad '{"priority":-1}')" 400
expect "priority says the range" err "invalid priority '-1'; use 0 to 1000000"

# The request line.
expect "bad percent-encoding in the path 400" is "$(req GET /steps/%4)" 400
expect "percent-encoding message" err 'invalid percent-encoding in the path; use %XX'
expect "%00 in an id 400" is "$(req GET /steps/a%00b)" 400
long=$(python3 -I -S -c 'print("/steps/" + "a" * 1100)')
expect "a path over 1024 bytes 414" is "$(req GET "$long")" 414
expect "414 message" err 'the request target is too long; keep it under 1024 bytes'
expect "a parameter given twice 400" is "$(req GET '/steps?limit=1&limit=2')" 400
expect "given twice message" err "query parameter 'limit' is given twice; give it once"
expect "limit not a number 400" is "$(req GET '/steps?limit=ten')" 400
expect "limit message" err "invalid limit 'ten'; use a whole number from 1 to 10000"
expect "an id with ':' on cancel 400" is "$(req POST /steps/a%3Ab/cancel "${AUTH[@]}")" 400
expect "a step id of 64 characters 400" is "$(req GET "/steps/$(printf 'a%.0s' $(seq 1 64))")" 400

# Found by fuzz_step_object: a field holding a NUL byte came back as
# \u0000, which the server could not read again (500, no body).
python3 -I -S -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
def cmd(*a):
    s.sendall(b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a))
    s.recv(100)
cmd(b"SELECT", sys.argv[2].encode())
cmd(b"HSET", b"job:nul1", b"type", b"x", b"note", b"a\x00b")
' "$REDIS_SOCK" "$STEPQ_DB"
expect "a step with a NUL byte in a field 200" is "$(req GET /steps/nul1)" 200
expect "the byte reads as \\u0000" grep -qF 'a\u0000b' "$tmp/body"
rcli DEL job:nul1 >/dev/null

# Nothing of the above was submitted.
expect "no step was created" is "$(rcli ZCARD jobs:pending)" 0

kill -TERM "$pid"
wait "$pid"
finish
