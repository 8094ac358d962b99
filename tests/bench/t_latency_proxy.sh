#!/usr/bin/env bash
# t_latency_proxy.sh PROXY ENV - the benchmarks' latency harness
# (bench/latency_proxy.c) against the test redis (its TCP port, from the
# fixture's ENV file), database 111: a PING through the proxy takes at least
# the set round trip, one without it does not, and a 1 MiB value and a
# pipeline of 1000 commands pass intact and in order.
set -u
proxy=$1
port=$(sed -n 's/^REDIS_PORT=//p' "$2")
db=111
rtt=20
pass=0 fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }
tmp=$(mktemp -d)
"$proxy" serve 0 "127.0.0.1:$port" "$rtt" >"$tmp/out" 2>"$tmp/err" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do grep -q '^port=' "$tmp/out" && break; sleep 0.1; done
pport=$(sed -n 's/^port=//p' "$tmp/out")
[ -n "$pport" ] || { echo "FAIL: the proxy did not start: $(cat "$tmp/err")"; echo "0 passed, 1 failed"; exit 1; }
cli() { redis-cli -h 127.0.0.1 -p "$pport" -n $db "$@"; }

direct=$("$proxy" ping "127.0.0.1:$port" 20)
through=$("$proxy" ping "127.0.0.1:$pport" 10)
echo "direct: $direct; through the proxy at $rtt ms: $through"
min=$(sed -n 's/.*rtt_ms_min=\([0-9.]*\).*/\1/p' <<<"$through")
dmax=$(sed -n 's/.*rtt_ms_p50=\([0-9.]*\).*/\1/p' <<<"$direct")
python3 -c "import sys; sys.exit(0 if $min >= $rtt else 1)" && ok "PING through the proxy >= $rtt ms ($min)" ||
    bad "PING through the proxy took $min ms, under the set $rtt ms"
python3 -c "import sys; sys.exit(0 if $min < 3 * $rtt else 1)" && ok "and not far above it" ||
    bad "PING through the proxy took $min ms, 3x the set $rtt ms"
python3 -c "import sys; sys.exit(0 if $dmax < $rtt / 2 else 1)" && ok "PING without it is fast ($dmax)" ||
    bad "PING without the proxy took $dmax ms: the check above proves nothing"

cli FLUSHDB >/dev/null
head -c 1048576 /dev/urandom | base64 -w0 >"$tmp/big"
cli -x SET big <"$tmp/big" >/dev/null
cli --raw GET big | head -c "$(stat -c %s "$tmp/big")" >"$tmp/back"
cmp -s "$tmp/big" "$tmp/back" && ok "a 1.4 MB value passes intact both ways" ||
    bad "the value read back through the proxy differs"

# A pipeline: 1000 INCRs sent at once (redis-cli would wait for each
# reply), whose replies must come back 1..1000 in order, in about one round
# trip (not 1000 of them).
out=$(python3 - "$pport" $db <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"SELECT %s\r\n" % sys.argv[2].encode())
t0 = time.monotonic()
s.sendall(b"INCR n\r\n" * 1000)
want = b"+OK\r\n" + b"".join(b":%d\r\n" % i for i in range(1, 1001))
got = b""
while len(got) < len(want):
    c = s.recv(65536)
    if not c:
        break
    got += c
print("inorder" if got == want else "garbled", int((time.monotonic() - t0) * 1000))
PY
)
[ "${out%% *}" = inorder ] && ok "1000 pipelined replies in order" ||
    bad "pipelined replies out of order or lost ($out)"
ms=${out##* }
[ "$ms" -lt $((5 * rtt)) ] && ok "a pipeline costs about one round trip, not one a command (${ms} ms)" ||
    bad "1000 pipelined commands took ${ms} ms: the proxy delays chunk by chunk"
cli FLUSHDB >/dev/null
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
