#!/usr/bin/env bash
# t_cli.sh - the command line people expect (database 116): --version,
# --payload @FILE and - (stdin), --result @FILE, and --json on every
# command that prints.
. "$(dirname "$0")/../cli/lib.sh"
S=$STEPQ
d=$(mktemp -d)
trap 'rm -rf "$d" "$tmpout"' EXIT

expect_ok "--version" '$S --version | grep -qE "^stepq [0-9]+\.[0-9]+\.[0-9]+$"'
expect_ok "--version --json" '$S --json --version | jq -e ".version | test(\"^[0-9]+\\\\.\")"'
expect_ok "--help names --version and --json" '$S --help | grep -q -- "--version" && $S --help | grep -q -- "--json"'

printf '{"w": 640,\n "h": 480}\n' >"$d/payload.json"
expect_ok "--payload @FILE" 'id=$($S submit --payload @"$d/payload.json") && $S get "$id" | jq -e ".payload == {\"w\":640,\"h\":480}"'
expect_ok "--payload - reads stdin" 'id=$(echo "{\"s\":1}" | $S submit --payload -) && $S get "$id" | jq -e ".payload == {\"s\":1}"'
expect_code 2 "--payload @missing is a usage error" '$S submit --payload @"$d/nope.json"'
expect_ok "which names the file" '$S submit --payload @"$d/nope.json" 2>&1 | grep -q "cannot read the payload from .*nope.json"'
head -c 1100000 /dev/zero | tr '\0' 'x' >"$d/big"
expect_code 2 "a payload file over 1 MiB is refused" '$S submit --payload @"$d/big"'
expect_ok "and nothing was submitted" '[ "$($S list pending | wc -l)" = 2 ]'

expect_ok "submit --json" '$S submit --type j --json | jq -e ".id | length > 0"'
expect_ok "list --json is GET /steps's shape" '$S list pending --limit 2 --json | jq -e ".state == \"pending\" and .limit == 2 and (.ids | length) == 2"'
c=$($S claim --worker cli-w --json)
id=$(jq -r .id <<<"$c") tok=$(jq -r .token <<<"$c")
echo '{"ok":true}' >"$d/result.json"
expect_ok "complete --result @FILE" '$S complete "$id" --token "$tok" --result @"$d/result.json" && $S get "$id" | jq -e ".result == {\"ok\":true}"'
c=$($S claim --worker cli-w)
expect_ok "fail --json" '$S fail "$(jq -r .id <<<"$c")" --token "$(jq -r .token <<<"$c")" --error boom --json | jq -e ".outcome == \"retry\""'
expect_ok "get --json" '$S get "$id" --json | jq -e ".id"'
expect_ok "workers --json" '$S workers --json | jq -e "type == \"array\""'
expect_ok "reap --json" '$S reap --json | jq -e ".requeued | type == \"number\""'
expect_ok "events --json" '$S events --json | jq -e "type == \"array\" or type == \"object\""'
expect_ok "migrate phase --json" '$S migrate phase --json | jq -e ".phase == \"job\""'
expect_ok "migrate phase MOVE --json" '$S migrate phase dual-write --json | jq -e ". == {\"from\":\"job\",\"phase\":\"dual-write\"}"'
expect_ok "migrate throttle --json" '$S migrate throttle --pause --json | jq -e ". == {\"paused\":true,\"rate\":null}" && $S migrate throttle --resume >/dev/null'
expect_ok "migrate status --json" '$S migrate status --json | jq -e ".phase == \"dual-write\""'
expect_ok "migrate backup --json" '$S migrate backup --out "$d/b.stepq" --side old --json | jq -s -e "last | .verified == true"'
finish
