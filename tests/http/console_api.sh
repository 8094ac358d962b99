#!/usr/bin/env bash
# console_api.sh - the console's routes of `stepq serve` with curl (database
# 113): the embedded page and its headers, the feed (the status document
# plus moves, queue and workers), POST /migrate/phase and /migrate/throttle
# with their token, Content-Type and refusals.
. "$(dirname "$0")/lib.sh"

export STEPQ_API_TOKEN=t0ken-for-tests-16b
for i in 1 2 3; do "$STEPQ" submit --type c >/dev/null; done
start_server "$tmp/serve.log"

# --- the page ----------------------------------------------------------------
expect "GET / 200" is "$(req GET /)" 200
expect "the page is HTML" hdr 'Content-Type: text/html'
expect "the page has a CSP without inline script" grep -qi "^Content-Security-Policy: default-src 'none'; script-src 'self';" "$tmp/hdr"
expect "the page may not be framed" hdr 'X-Frame-Options: DENY'
expect "the page loads its script" grep -q '<script src="/console.js"' "$tmp/body"
expect "GET /console.js 200" is "$(req GET /console.js)" 200
expect "the script is JavaScript" hdr 'Content-Type: text/javascript'
expect "the script is the one of web/" cmp -s "$tmp/body" "$(dirname "$0")/../../web/console.js"
expect "GET /console.css 200" is "$(req GET /console.css)" 200
expect "POST / is 405" is "$(req POST / "${AUTH[@]}")" 405

# --- the feed ----------------------------------------------------------------
expect "GET /console/feed 200" is "$(req GET /console/feed)" 200
expect "the feed starts with status, healthy, reasons" json "list(j)[:3] == ['status', 'healthy', 'reasons'] and j['healthy'] is True"
expect "the phase is flat, the pin null" json "j['phase'] == 'job' and j['pin'] is None"
expect "one move, forward to dual-write, allowed" json "j['moves'] == [{'to': 'dual-write', 'direction': 'forward', 'allowed': True, 'refusal': None, 'command': 'stepq migrate phase', 'preconditions': []}]"
expect "queue depth per state and side" json "j['queue']['pending'] == {'old': 3, 'new': 0} and j['queue']['active'] == {'old': 0, 'new': 0}"
expect "workers is an array" json "isinstance(j['workers'], list)"
expect "the feed says auth is on" json "j['auth'] is True"
expect "times have an ISO twin" json "isinstance(j['checked_at'], int) and j['checked_at_iso'].endswith('Z')"

# --- POST /migrate/phase -----------------------------------------------------
expect "a move without a token is 401" is "$(req POST /migrate/phase -d '{"to":"dual-write"}')" 401
expect "a move with a wrong token is 401" is "$(req POST /migrate/phase -H 'Authorization: Bearer nope' -d '{"to":"dual-write"}')" 401
expect "a form post is 415, even with the token" is "$(NO_CT=1 req POST /migrate/phase "${AUTH[@]}" -d 'to=dual-write')" 415
expect "415 answers JSON that says what to send" json "'application/json' in j['error']"
expect "text/plain is 415 too" is "$(NO_CT=1 req POST /migrate/phase "${AUTH[@]}" -H 'Content-Type: text/plain' -d '{"to":"dual-write"}')" 415
expect "the phase did not move" is "$("$STEPQ" migrate phase)" job
expect "an unknown phase is 400" is "$(req POST /migrate/phase "${AUTH[@]}" -d '{"to":"dualread"}')" 400
expect "400 names the phases" json "\"unknown phase 'dualread'\" in j['error']"
expect "an unknown field is 400" is "$(req POST /migrate/phase "${AUTH[@]}" -d '{"to":"dual-write","force":true}')" 400
expect "a body that is not an object is 400" is "$(req POST /migrate/phase "${AUTH[@]}" -d '"dual-write"')" 400
expect "a move two steps ahead is 409" is "$(req POST /migrate/phase "${AUTH[@]}" -d '{"to":"dual-read"}')" 409
expect "409 carries the library's text" json "j['error'] == \"cannot move from 'job' to 'dual-read': phases move one step at a time; next is 'dual-write'\""
expect "a move with the token is 200" is "$(req POST /migrate/phase "${AUTH[@]}" -H 'Content-Type: application/json; charset=utf-8' -d '{"to":"dual-write","reason":"console test","who":"ops"}')" 200
expect "200 says from and to" json "j == {'from': 'job', 'phase': 'dual-write'}"
expect "the phase moved" is "$("$STEPQ" migrate phase)" dual-write
expect "the audit names who and why" sh -c "'$STEPQ' migrate status --json | jq -e '.audit[-1] | .who == \"ops (http)\" and .reason == \"console test\" and (.ts_iso | endswith(\"Z\"))' >/dev/null"
expect "the rules refuse dual-read: 409" is "$(req POST /migrate/phase "${AUTH[@]}" -d '{"to":"dual-read"}')" 409
"$STEPQ" migrate phase dual-read 2>"$tmp/cli_err" >/dev/null
expect "the refusal is the CLI's" sh -c "grep -qF \"\$(jq -r .error '$tmp/body')\" '$tmp/cli_err'"
sleep 2.1 # the feed's cache
req GET /console/feed >/dev/null
expect "the feed shows the refused move with its reason" json "[m for m in j['moves'] if m['to'] == 'dual-read'][0]['allowed'] is False and 'no finished backfill' in [m for m in j['moves'] if m['to'] == 'dual-read'][0]['refusal']"

# --- the preconditions spelled out agree with the library's verdict ------------
# At every stop of a walk to 'step' and back, for each next move: allowed
# (stepq__move_check) is true exactly when every precondition listed is met.
agree() {
    sleep 2.1 # the feed's status document is cached 2 s
    curl -s "$url/console/feed" >"$tmp/feed.json"
    jq -e '.moves | length > 0 and all(.allowed == ((.preconditions | map(.met)) | all))' "$tmp/feed.json" >/dev/null ||
        { jq -c '.phase, .moves' "$tmp/feed.json"; return 1; }
}
unmet() { jq -e --arg to "$1" '.moves[] | select(.to == $to) | .preconditions | map(select(.met | not)) | length > 0' "$tmp/feed.json" >/dev/null; }
expect "dual-write before the backfill: they agree, and one is unmet" sh -c "$(declare -f agree unmet); tmp='$tmp' url='$url'; agree && unmet dual-read"
"$STEPQ" migrate backfill >/dev/null 2>&1
expect "after the backfill: they agree" sh -c "$(declare -f agree); tmp='$tmp' url='$url'; agree"
"$STEPQ" migrate verify >/dev/null 2>&1
expect "after the verify: they agree" sh -c "$(declare -f agree); tmp='$tmp' url='$url'; agree"
"$STEPQ" migrate phase dual-read >/dev/null
expect "dual-read: they agree (back needs a reverse verify)" sh -c "$(declare -f agree unmet); tmp='$tmp' url='$url'; agree && unmet dual-write"
"$STEPQ" migrate verify >/dev/null 2>&1
"$STEPQ" migrate verify --reverse >/dev/null 2>&1
expect "dual-read after both verifies: they agree" sh -c "$(declare -f agree); tmp='$tmp' url='$url'; agree"
"$STEPQ" migrate verify >/dev/null 2>&1
"$STEPQ" migrate phase step-primary >/dev/null
expect "step-primary before a backup: they agree" sh -c "$(declare -f agree unmet); tmp='$tmp' url='$url'; agree && unmet step"
"$STEPQ" migrate backup --out "$tmp/old.stepq" --side old >/dev/null 2>&1
expect "after the backup: they agree" sh -c "$(declare -f agree); tmp='$tmp' url='$url'; agree"
"$STEPQ" migrate phase step >/dev/null
expect "step: they agree" sh -c "$(declare -f agree); tmp='$tmp' url='$url'; agree"
"$STEPQ" migrate rollback >/dev/null 2>&1
"$STEPQ" migrate rollback >/dev/null 2>&1
expect "back in dual-read: they agree" sh -c "$(declare -f agree); tmp='$tmp' url='$url'; agree"

# --- POST /migrate/throttle --------------------------------------------------
expect "pause without a token is 401" is "$(req POST /migrate/throttle -d '{"paused":true}')" 401
expect "pause" is "$(req POST /migrate/throttle "${AUTH[@]}" -d '{"paused":true}')" 200
expect "the throttle is paused" is "$(rcli HGET stepq:throttle paused)" 1
expect "paused must be a boolean" is "$(req POST /migrate/throttle "${AUTH[@]}" -d '{"paused":1}')" 400
expect "a negative rate is 400" is "$(req POST /migrate/throttle "${AUTH[@]}" -d '{"rate":-1}')" 400
expect "an empty body object is 400" is "$(req POST /migrate/throttle "${AUTH[@]}" -d '{}')" 400
expect "a rate" is "$(req POST /migrate/throttle "${AUTH[@]}" -d '{"rate":250}')" 200
sleep 2.1
req GET /console/feed >/dev/null
expect "the feed types the throttle" json "j['throttle']['paused'] is True and j['throttle']['rate'] == 250"
expect "resume and clear the rate" is "$(req POST /migrate/throttle "${AUTH[@]}" -d '{"paused":false,"rate":null}')" 200
expect "resumed" is "$(rcli HGET stepq:throttle paused)" 0
expect "the override is gone" is "$(rcli HEXISTS stepq:throttle rate)" 0

finish
