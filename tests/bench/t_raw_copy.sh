#!/usr/bin/env bash
# t_raw_copy.sh RAW_COPY LOAD_LEGACY ENV - the benchmarks' two baselines
# (bench/raw_copy.c) against the test redis (its TCP port, from the
# fixture's ENV file), database 110: the raw limit copies every old key of
# a load_legacy load to its new name, and --read (the floor of a verify)
# reads each pair and writes nothing.
set -u
raw=$1 load=$2
port=$(sed -n 's/^REDIS_PORT=//p' "$3")
db=110
url=redis://127.0.0.1:$port/$db
pass=0 fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }
cli() { redis-cli -h 127.0.0.1 -p "$port" -n $db "$@"; }
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }

cli FLUSHDB >/dev/null
keys=$(field keys "$("$load" "$url" 300)")
[ "${keys:-0}" -gt 300 ] && ok "load_legacy wrote $keys old keys" || bad "load_legacy wrote '${keys:-}' keys"
size=$(cli DBSIZE) # load_legacy writes keys of no rule too (workers' hashes)
out=$("$raw" "$url" 100)
echo "raw_copy: $out"
[ "$(field keys "$out")" = "$keys" ] && [ "$(field copied "$out")" = "$keys" ] &&
    ok "the raw limit copies every old key" || bad "the raw limit: $out, $keys old keys"
[ "$(cli DBSIZE)" = $((size + keys)) ] && ok "each has its new twin" || bad "DBSIZE $(cli DBSIZE), $size before"
[ "$(cli HGET step:"$(cli --scan --pattern 'job:*' | grep -v ':progress' | head -1 | cut -d: -f2-)" id)" != "" ] &&
    ok "a step's twin holds its record" || bad "a step's twin is empty"
out=$("$raw" --read "$url" 100)
echo "raw_copy --read: $out"
[ "$(field keys "$out")" = "$keys" ] && [ "$(field copied "$out")" = "$keys" ] &&
    ok "the verify floor reads every pair" || bad "the verify floor: $out, $keys old keys"
[ "$(cli DBSIZE)" = $((size + keys)) ] && ok "and writes nothing" || bad "DBSIZE $(cli DBSIZE) after --read"
"$raw" --read 2>/dev/null
[ $? = 2 ] && ok "a missing URL is a usage error" || bad "a missing URL did not exit 2"
cli FLUSHDB >/dev/null
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
