#!/usr/bin/env bash
# The worker runs a command per step: payload on stdin, env vars, progress
# lines, the JSON last line or the stdout tail as result, retries on a
# non-zero exit, a clear error for a command that does not exist.
. "$(dirname "$0")/lib.sh"

cat >"$TMP/job.sh" <<'SH'
#!/usr/bin/env bash
payload=$(cat)
printf '%s|%s|%s|%s\n' "$payload" "$STEPQ_STEP_ID" "$STEPQ_STEP_TYPE" "$STEPQ_ATTEMPT" >>"$OUT/seen"
echo "progress 40 reading things"
echo "some output"
case "$payload" in
*fail*) echo "bad input" ; exit 7 ;;
*text*) echo "line one"; echo "line two"; exit 0 ;;
esac
echo '{"ok":true,"n":1}'
SH
chmod +x "$TMP/job.sh"
export OUT=$TMP

ok=$($S submit --type resize --payload '{"kind":"json"}')
tx=$($S submit --type note --payload '{"kind":"text"}')
bad=$($S submit --type resize --max-attempts 2 --payload '{"kind":"fail"}')
start_worker w40 --concurrency 2 -- "$TMP/job.sh"
all_ended() { is_status "$ok" completed && is_status "$tx" completed && is_status "$bad" failed; }
expect "steps end within 10 s" wait_for 10 all_ended
expect "payload and env reach the command" \
    grep -qxF "{\"kind\":\"json\"}|$ok|resize|1" "$TMP/seen"
expect "progress line reaches the progress hash" \
    eq "$($S get "$ok" | field progress.percent)/$($S get "$ok" | field progress.message)" "40/reading things"
expect "JSON last line is the result" eq "$($S get "$ok" | field result)" '{"ok":true,"n":1}'
expect "non-JSON stdout: the tail is the result (progress lines left out)" \
    eq "$($S get "$tx" | field result)" "$(printf 'some output\nline one\nline two')"
expect "non-zero exit retried, then failed" eq "$($S get "$bad" | field attempts)" 2
expect "failure says why" eq "$($S get "$bad" | field error)" "exit status 7: bad input"
expect "the attempt number counts up" grep -qF "|$bad|resize|2" "$TMP/seen"
kill -TERM "$WPID"
wait "$WPID"; rc=$?
expect "SIGTERM when idle: exit 0" eq "$rc" 0
expect "deregistered" eq "$($S workers)" "[]"

# A command that does not exist.
nx=$($S submit --max-attempts 1)
start_worker w40b -- "$TMP/no-such-command"
expect "missing command fails the step" wait_for 5 is_status "$nx" failed
expect "with a clear error" eq "$($S get "$nx" | field error)" \
    "cannot run '$TMP/no-such-command': No such file or directory; check the command and PATH"
kill -TERM "$WPID"; wait "$WPID" || true

# A command that never reads its stdin, with a payload bigger than a pipe.
big="{\"x\":\"$(head -c 120000 /dev/zero | tr '\0' a)\"}"
nr=$($S submit --payload "$big")
start_worker w40c -- true
expect "a child that ignores a big payload does not block the worker" wait_for 5 is_status "$nr" completed
kill -TERM "$WPID"; wait "$WPID" || true
finish
