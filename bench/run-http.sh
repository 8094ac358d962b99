#!/usr/bin/env bash
# run-http.sh BUILD - `make bench`, HTTP section: GET /health latency of
# `stepq serve`, idle and under a slow-client attack (bench/slowloris.py):
# 1000 connections trickling a byte every 2 s from one address (the
# per-address limit holds it), then from 50 addresses (the total cap and
# the head deadline hold it). Uses $REDIS_URL (bench/run.sh starts one).
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/stepq-bench-http.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
STEPQ_API_TOKEN=bench-token-0123456789abcdef "$build/stepq" serve --listen 127.0.0.1:0 2>"$tmp/serve.log" &
pid=$!
for _ in $(seq 100); do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/serve.log")
    [ -n "$port" ] && break
    sleep 0.05
done
echo "## HTTP: GET /health under a slow-client attack (serve defaults: 4000 connections, 64 per address, head deadline 10 s, 1 s near the cap)"
python3 "$here/bench/slowloris.py" "$port" 1000 1 "${BENCH_HTTP_SECONDS:-15}"
python3 "$here/bench/slowloris.py" "$port" 1000 50 "${BENCH_HTTP_SECONDS:-15}" | tail -n +3
# As many slow connections as the cap: the head deadline drops to 1 s.
python3 "$here/bench/slowloris.py" "$port" 4000 100 "${BENCH_HTTP_SECONDS:-15}" | tail -n +3
echo
