#!/usr/bin/env bash
# bench/callgrind.sh BUILD [STEPS] - the instructions redis-server spends per
# lifecycle step (submit + claim + complete, batches of 50, one client), for
# each contender of the lifecycle bench: the "same commands" and "data only"
# baselines, stepq in phase job and in dual-write. Counted by callgrind on
# redis-server, with instrumentation on only while the contender runs (its
# scripts are loaded by a warm-up run first). Unlike wall-clock figures these
# do not move with the load of the machine (to a percent), so they are what
# to compare when changing a script. Needs valgrind; takes about a minute.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
steps=${2:-2000}
tmp=$(mktemp -d /tmp/stepq-callgrind.XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
command -v valgrind >/dev/null || { echo "valgrind not found; run scripts/bootstrap.sh" >&2; exit 1; }

# ir CONTENDER: instructions per step of one run.
ir() {
    local who=$1 sock=$tmp/redis.sock
    rm -f "$tmp"/cg.* "$sock"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/cg.out" \
        redis-server --port 0 --unixsocket "$sock" --save '' --appendonly no \
        --dir "$tmp" >"$tmp/valgrind.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do
        redis-cli -s "$sock" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    "$build/bench/bench_queue" "unix://$sock" 100 "$who" 1 >/dev/null # loads the scripts
    callgrind_control -i on "$pid" >/dev/null 2>&1
    "$build/bench/bench_queue" "unix://$sock" "$steps" "$who" 1 >/dev/null
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    local total
    total=$(cat "$tmp"/cg.out* | awk '/^(summary|totals):/ {s += $2} END {print s}')
    echo $((total / steps))
}

same=$(ir same) data=$(ir data) job=$(ir job) dual=$(ir dual-write)
ratio() { python3 -c "print('%.2fx' % ($1 / $2))"; }
printf '%-36s %10s %8s\n' "lifecycle, 1 client ($steps steps)" "Ir/step" "ratio"
printf '%-36s %10s %8s\n' "baseline: same commands, plain" "$same" "1.00"
printf '%-36s %10s %8s\n' "baseline: data only" "$data" "$(ratio "$data" "$same")"
printf '%-36s %10s %8s\n' "stepq, phase job" "$job" "$(ratio "$job" "$same")"
printf '%-36s %10s %8s  of job\n' "stepq, phase dual-write" "$dual" "$(ratio "$dual" "$job")"
