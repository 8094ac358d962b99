#!/usr/bin/env bash
# A NUL byte in a legacy step (issue 10, finding 7): the worker parsed the
# claim without JSON_ALLOW_NUL and dropped the whole claim without a word,
# so none of its steps ever ran. Now a NUL where the command can take it
# (a field, the payload) is no trouble; a step the worker cannot run (a NUL
# in its type, which goes into the environment) is failed with the reason
# and logged; every other step of the claim runs.
. "$(dirname "$0")/lib.sh"

# Legacy records written by the old system, bytes and all.
printf 'bad\0type' | rcli -x HSET job:legacy-x type >/dev/null
rcli HSET job:legacy-x id legacy-x status pending priority 5 max_attempts 1 >/dev/null
printf 'a\0b' | rcli -x HSET job:legacy-y note >/dev/null
rcli HSET job:legacy-y id legacy-y status pending priority 5 type old \
    payload '{"s":"x\u0000y"}' >/dev/null
rcli HSET job:legacy-z status pending priority 5 >/dev/null # no id field
rcli ZADD jobs:pending 5 legacy-x 5 legacy-y 5 legacy-z >/dev/null
ids=(legacy-y legacy-z)
for _ in 1 2 3; do ids+=("$($S submit --priority 5)"); done

cat >"$TMP/step.sh" <<'SH'
#!/usr/bin/env bash
cat >"$OUT/payload.$STEPQ_STEP_ID"
echo '{"ok":1}'
SH
chmod +x "$TMP/step.sh"
export OUT=$TMP
start_worker w99 --concurrency 8 -- "$TMP/step.sh"
all_done() {
    local id
    for id in "${ids[@]}"; do is_status "$id" completed || return 1; done
}
expect "every other step of the claim completes" wait_for 10 all_done
expect "the step with a NUL in its type ends failed" wait_for 5 is_status legacy-x failed
expect "with the reason" grep -q "NUL" <<<"$($S get legacy-x | field error)"
expect "the worker log names it" grep -q "step legacy-x cannot run here: .*NUL" "$TMP/w99.log"
expect "the NUL in the payload reached the command" eq "$(cat "$TMP/payload.legacy-y")" '{"s":"x\u0000y"}'
expect "it ran once" eq "$($S get legacy-y | field attempts)" 1
kill -TERM "$WPID"; wait "$WPID" || true
finish
