#!/usr/bin/env bash
# bench/run-cluster.sh BUILD - the cluster section of `make bench`
# (bench/README.md, docs/cluster.md "Throughput"): a private Redis Cluster
# (tests/cluster/cluster.sh: 3 masters, 3 replicas), the queue lifecycle
# (submit, claim, complete: bench_queue's stepq client) with the same total
# work and the same number of clients, first all on 1 namespace (1 master),
# then on 3 namespaces on the 3 masters; steps/s, the Redis CPU per step of
# each master and of all (INFO cpu before and after), and the ratio.
#   BENCH_CLUSTER_STEPS   steps per run (default: BENCH_STEPS, else 20000)
#   BENCH_CLUSTER_CLIENTS clients in all (default 3)
#   BENCH_ROUNDS          runs of each, taking turns; the best is shown (default 3)
#   BENCH_SKIP            "cluster" skips this section
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
steps=${BENCH_CLUSTER_STEPS:-${BENCH_STEPS:-20000}}
clients=${BENCH_CLUSTER_CLIENTS:-3}
rounds=${BENCH_ROUNDS:-3}
[[ " ${BENCH_SKIP:-} " == *" cluster "* ]] && exit 0

tmp=$(mktemp -d /tmp/stepq-bench-cluster.XXXXXX)
trap '"$here/tests/cluster/cluster.sh" stop "$tmp" >/dev/null 2>&1; rm -rf "$tmp"' EXIT
"$here/tests/cluster/cluster.sh" start "$tmp" >/dev/null
. "$tmp/env"
port1=${CLUSTER_PORTS%% *}
masters=$(redis-cli -p "$port1" cluster nodes | awk '$3 ~ /master/ && NF > 8 { sub(/@.*/, "", $2); sub(/.*:/, "", $2); print $2 }' | sort -n)
owner() { # the master port of namespace tag $1
    local s
    s=$(redis-cli -p "$port1" cluster keyslot "$1x")
    redis-cli -p "$port1" cluster nodes | awk -v s="$s" '$3 ~ /master/ {
        for (i = 9; i <= NF; i++) { n = split($i, r, "-"); lo = r[1]; hi = n > 1 ? r[2] : r[1];
            if ($i !~ /^\[/ && s + 0 >= lo + 0 && s + 0 <= hi + 0) { sub(/@.*/, "", $2); sub(/.*:/, "", $2); print $2 } } }'
}
ns_on() { # a namespace on master $1
    local n
    for n in $(seq 1 500); do [ "$(owner "{bench$n}:")" = "$1" ] && { echo "{bench$n}:"; return; }; done
}
nss=()
for m in $masters; do nss+=("$(ns_on "$m")"); done
three=$(IFS=,; echo "${nss[*]}")
one=${nss[0]}
B=$build/bench/bench_queue

echo "## Redis Cluster: 1 namespace on 1 master vs 3 namespaces on 3 masters"
echo "# $steps steps per run, $clients clients, phase job; 3 masters + 3 replicas on $(nproc) cores shared"
echo "# with everything else on this machine (the masters do not get a core each)"
printf '%-34s %8s %12s %14s\n' "namespaces" "clients" "steps/s" "redis us/step"
best1=0 best3=0
for r in $(seq 1 "$rounds"); do
    out1=$("$B" "$CLUSTER_URL" "$steps" cluster "$one" "$clients")
    out3=$("$B" "$CLUSTER_URL" "$steps" cluster "$three" $((clients / 3 > 0 ? clients / 3 : 1)))
    v1=$(awk '$1 == "=" {print $3}' <<<"$out1") v3=$(awk '$1 == "=" {print $3}' <<<"$out3")
    if [ "$(python3 -c "print(int($v1 > $best1))")" = 1 ]; then best1=$v1 keep1=$out1; fi
    if [ "$(python3 -c "print(int($v3 > $best3))")" = 1 ]; then best3=$v3 keep3=$out3; fi
done
echo "$keep1"
echo "$keep3"
printf '%-34s %12.2fx  (best of %d runs each; per-master figures are us of CPU per step)\n' \
    "3 masters / 1 master, steps/s" "$(python3 -c "print($best3 / $best1)")" "$rounds"
echo
