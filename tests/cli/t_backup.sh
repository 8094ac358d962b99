#!/usr/bin/env bash
# t_backup.sh - exit codes and messages of migrate backup/restore/cleanup.
set -u
: "${STEPQ:?}" "${REDIS_SOCK:?}" "${STEPQ_DB:?}"
export REDIS_URL="unix://$REDIS_SOCK?db=$STEPQ_DB"
rc() { redis-cli -s "$REDIS_SOCK" -n "$STEPQ_DB" "$@" >/dev/null; }
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
expect() { # expect CODE TEXT -- command...: exit code and a text in stderr+stdout
    local want=$1 text=$2; shift 3
    local out got
    out=$("$@" 2>&1); got=$?
    if [ "$got" = "$want" ] && grep -qF -- "$text" <<<"$out"; then pass=$((pass + 1))
    else fail=$((fail + 1)); echo "FAIL: $* -> $got (want $want, '$text'): $out"; fi
}
rc FLUSHDB
rc HSET job:a type t; rc HSET job:b type t; rc COPY job:a step:a
expect 2 "--out FILE is required" -- "$STEPQ" migrate backup
expect 2 "unknown side 'left'" -- "$STEPQ" migrate backup --out "$tmp/x" --side left
expect 0 "backup: 2 old keys" -- "$STEPQ" migrate backup --out "$tmp/b1"
expect 4 "cannot restore the old keys in phase 'job'" -- "$STEPQ" migrate restore "$tmp/b1" --replace
expect 4 "cannot restore the old keys in phase 'job'" -- "$STEPQ" migrate restore "$tmp/b1" --replace --dry-run
head -c 100 "$tmp/b1" >"$tmp/cut"
expect 2 "truncated" -- "$STEPQ" migrate restore "$tmp/cut" --replace
expect 3 "cannot open backup" -- "$STEPQ" migrate restore "$tmp/none"
expect 4 "only in phase 'step'" -- "$STEPQ" migrate cleanup --backup "$tmp/b1"
expect 0 "phase: step" -- "$STEPQ" migrate phase step --force
expect 4 "already exists; use --replace" -- "$STEPQ" migrate restore "$tmp/b1"
expect 0 "would restore 2" -- "$STEPQ" migrate restore "$tmp/b1" --replace --dry-run
expect 4 "taken before the switch" -- "$STEPQ" migrate cleanup --backup "$tmp/b1"
expect 0 "backup: 2 old keys" -- "$STEPQ" migrate backup --out "$tmp/b2"
expect 1 "they hold steps the new side lacks" -- "$STEPQ" migrate cleanup --backup "$tmp/b2"
[ "$(redis-cli -s "$REDIS_SOCK" -n "$STEPQ_DB" exists job:a job:b step:a)" = 2 ] && pass=$((pass + 1)) ||
    { fail=$((fail + 1)); echo "FAIL: cleanup should leave job:b and step:a only"; }
# A set above --big goes in chunks; a partial one left by a restore cut
# short (its mark in stepq:restoring) is refused until --replace.
rc FLUSHDB
rc HSET stepq:phase phase step
rc SADD jobs:completed a b c
expect 2 "invalid big '0'" -- "$STEPQ" migrate backup --out "$tmp/b3" --big 0
expect 0 "backup: 1 old keys" -- "$STEPQ" migrate backup --out "$tmp/b3" --big 2
rc DEL jobs:completed
rc SADD jobs:completed a
rc HSET stepq:restoring jobs:completed 0123
expect 4 "'jobs:completed' was left partly written" -- "$STEPQ" migrate restore "$tmp/b3"
# migrate status shows the mark, with the same way out.
expect 0 "1 keys were left partly written by a restore that did not finish (first: jobs:completed): run the restore of the same backup again with --replace, or delete each key and its mark (HDEL stepq:restoring KEY)" -- "$STEPQ" migrate status
expect 0 '"restoring":{"keys":1,"first":["jobs:completed"],"hash":"stepq:restoring"}' -- "$STEPQ" migrate status --json
expect 0 "restored 1" -- "$STEPQ" migrate restore "$tmp/b3" --replace
expect 0 '"restoring":{"keys":0,"first":[],"hash":"stepq:restoring"}' -- "$STEPQ" migrate status --json
whole() { # whole NS: the namespace's set whole again (3 members), its mark gone
    [ "$(redis-cli -s "$REDIS_SOCK" -n "$STEPQ_DB" eval "return {redis.call('SCARD', KEYS[1]), redis.call('EXISTS', KEYS[2])}" 2 "$1jobs:completed" "$1stepq:restoring" | tr '\n' ' ')" = "3 0 " ] &&
        pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: ${1}jobs:completed should be whole again, its mark gone"; }
}
whole ""
# The other way out, by hand, as the advice says, in a namespace: the
# advice names the namespace's marks hash; the key and its mark deleted,
# the restore runs without --replace and writes the key whole.
rc FLUSHDB
rc HSET ns1:stepq:phase phase step
rc SADD ns1:jobs:completed a b c
expect 0 "backup: 1 old keys" -- "$STEPQ" --namespace ns1: migrate backup --out "$tmp/b4" --big 2
rc DEL ns1:jobs:completed
rc SADD ns1:jobs:completed a
rc HSET ns1:stepq:restoring ns1:jobs:completed 0123
expect 4 "was left partly written" -- "$STEPQ" --namespace ns1: migrate restore "$tmp/b4"
advice=$("$STEPQ" --namespace ns1: migrate status 2>&1 | grep -o 'HDEL [^ ]* KEY')
[ "$advice" = "HDEL ns1:stepq:restoring KEY" ] && pass=$((pass + 1)) ||
    { fail=$((fail + 1)); echo "FAIL: the advice in namespace ns1: names '$advice'"; }
rc DEL ns1:jobs:completed
rc ${advice% KEY} ns1:jobs:completed
expect 0 '"restoring":{"keys":0,' -- "$STEPQ" --namespace ns1: migrate status --json
expect 0 "restored 1" -- "$STEPQ" --namespace ns1: migrate restore "$tmp/b4"
whole ns1:
rc FLUSHDB
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
