#!/usr/bin/env bash
# The main job in its short mode: the walk under load and a clean
# reconciliation (nothing lost, nothing run twice at once).
. "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
rc=0
STEPQ_MAIN_SHORT=1 "$root/scripts/mainjob.sh" "$S" >"$TMP/main.out" 2>&1 || rc=$?
cat "$TMP/main.out"
expect "main job exits 0" eq "$rc" 0
expect "steps were submitted and completed" grep -Eq '^   completed +[1-9]' "$TMP/main.out"
expect "nothing lost" grep -Eq '^   lost +0$' "$TMP/main.out"
expect "nothing claimed twice" grep -Eq '^   claimed twice +0$' "$TMP/main.out"
expect "the walk printed its phases" grep -q '^== phase dual-write' "$TMP/main.out"
finish
