#!/usr/bin/env bash
# tests/cluster/soak.sh STEPQ [N] [TESTS...] - the cluster's chaos cases run
# again and again (docs/cluster.md, "Soak"): N rounds (default 5) of each
# test named (default t_cluster_reshard and t_cluster_failover: a reshard in
# the middle of the backfill, a master killed in the middle of the walk, each
# under load) on one private cluster of its own (ports from
# STEPQ_CLUSTER_PORT, default 47000). Every run checks that each submitted
# step completed exactly once, none lost, none overlapped; the figures of
# every run go to DIR/soak.log and their totals are printed at the end.
# A failed run's files are kept (DIR/run-I-TEST/, with its output in
# DIR/run-I-TEST.out) and the soak goes on; exit 1 when any run failed.
# DIR is $SOAK_DIR, default a new /tmp/stepq-soak.XXXXXX (kept on failure).
set -u
here=$(cd "$(dirname "$0")" && pwd)
STEPQ=$(cd "$(dirname "${1:?usage: $0 STEPQ [N] [TESTS...]}")" && pwd)/$(basename "$1")
n=${2:-5}
shift $(($# >= 2 ? 2 : 1))
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(t_cluster_reshard t_cluster_failover)
dir=${SOAK_DIR:-$(mktemp -d /tmp/stepq-soak.XXXXXX)}
mkdir -p "$dir"
export STEPQ SOAK_LOG=$dir/soak.log KEEP=1 CLUSTER_DIR=$dir/cluster
: >"$SOAK_LOG"
"$here/cluster.sh" start "$CLUSTER_DIR" || exit 1
trap '"$here/cluster.sh" stop "$CLUSTER_DIR"' EXIT

bad=0 runs=0
t0=$(date +%s)
for i in $(seq 1 "$n"); do
    for t in "${tests[@]}"; do
        run=$dir/run-$i-$t
        mkdir -p "$run"
        # A failed run may have left a node down: heal before the next.
        (. "$here/lib.sh" && heal) >>"$dir/heal.log" 2>&1 || echo "round $i: the cluster could not be healed (heal.log)"
        s=$(date +%s) runs=$((runs + 1))
        if TMPDIR=$run bash "$here/$t.sh" >"$run.out" 2>&1; then
            verdict=ok
            rm -rf "$run" "$run.out"
        else
            verdict=FAILED bad=$((bad + 1))
        fi
        echo "round $i $t: $verdict ($(($(date +%s) - s)) s) $(tail -1 "$SOAK_LOG" 2>/dev/null | grep "^$t " | cut -d' ' -f2-)"
    done
done
echo "--- $n rounds in $(($(date +%s) - t0)) s; per test: runs, steps, lost, twice, extra, overlaps"
awk '{ t = $1; runs[t]++; for (i = 2; i <= NF; i++) { split($i, kv, "="); sum[t, kv[1]] += kv[2] } }
     END { for (t in runs) printf "%-22s runs=%d steps=%d lost=%d twice=%d extra=%d overlaps=%d\n", t, runs[t],
           sum[t, "steps"], sum[t, "lost"], sum[t, "twice"], sum[t, "extra"], sum[t, "overlaps"] }' "$SOAK_LOG"
echo "runs: $runs, failed: $bad (a failed run's files: $dir)"
trap - EXIT
"$here/cluster.sh" stop "$CLUSTER_DIR"
[ "$bad" = 0 ] && [ -z "${SOAK_DIR:-}" ] && rm -rf "$dir"
[ "$bad" = 0 ]
