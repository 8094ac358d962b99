#!/usr/bin/env bash
# bench/run-scale.sh BUILD - the walks at production scale (issue 14;
# bench/README.md, "Scale section"):
#  1. over a link: each walk (backfill, verify, repair, rollback, backup,
#     cleanup, restore) and
#     the raw limit (bench/raw_copy: pipelined SCAN + COPY), on the same
#     BENCH_LINK_STEPS load, over loopback TCP and through
#     bench/latency_proxy at each round trip of BENCH_RTTS; keys/s, the
#     ratio to the raw limit over the same link, the PING round trip
#     measured through the proxy. Contenders take turns, best of
#     BENCH_SCALE_ROUNDS;
#  2. at each size of BENCH_SCALE_SIZES (loopback): the same walks, keys/s
#     and peak RSS (GNU time), skipped with a message when Redis would not
#     fit in the memory available; at the largest size also the queue
#     lifecycle (bench/bench_queue, 8 clients, database 1) idle and while a
#     throttled backfill (--max-latency-ms 1) runs;
#  3. the formula T(N, RTT) = N * (a + b * RTT) fitted per walk from the
#     loopback and the largest-RTT figures of part 1, checked against the
#     other round trips and the sizes of part 2.
#   BENCH_LINK_STEPS    steps loaded for part 1 (default 100000)
#   BENCH_RTTS          round trips in ms, 0 = no proxy (default "0 0.5 1 2")
#   BENCH_SCALE_SIZES   step counts for part 2 (default "1000000 5000000")
#   BENCH_SCALE_ROUNDS  rounds of part 1 (default 2)
#   BENCH_SKIP          words: "link", "sizes", "lifecycle", "reconcile" (the
#                       repair and rollback walks: at 5M steps the rollback's
#                       three walks alone take about a quarter of an hour)
# Uses its own private redis-server (tests/redis.sh), never REDIS_URL's.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
link_n=${BENCH_LINK_STEPS:-100000}
rtts=${BENCH_RTTS:-"0 0.5 1 2"}
sizes=${BENCH_SCALE_SIZES:-"1000000 5000000"}
rounds=${BENCH_SCALE_ROUNDS:-2}
skip=" ${BENCH_SKIP:-} "
B=$build/bench
walks="backfill verify repair rollback backup cleanup restore"

tmp=$(mktemp -d /tmp/stepq-bench-scale.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    "$here/tests/redis.sh" stop "$tmp/redis" || true
    rm -rf "$tmp"
}
trap cleanup EXIT
"$here/tests/redis.sh" start "$tmp/redis" >/dev/null
port=$(sed -n 's/^REDIS_PORT=//p' "$tmp/redis/env")
direct=redis://127.0.0.1:$port/0
cli() { redis-cli -p "$port" "$@"; }
. "$(dirname "$0")/lib.sh"
py() { python3 -c "$1"; }
res=$tmp/results # lines: KIND RTT_OR_N CONTENDER KEYS_PER_S RSS_KIB
: >"$res"

# A proxy per round trip (0: none): url_for RTT.
declare -A url measured
for r in $rtts; do
    if [ "$r" = 0 ]; then
        url[$r]=$direct
    else
        "$B/latency_proxy" serve 0 "127.0.0.1:$port" "$r" >"$tmp/proxy.$r" &
        pids+=($!)
        for _ in $(seq 50); do grep -q '^port=' "$tmp/proxy.$r" && break; sleep 0.1; done
        url[$r]=redis://127.0.0.1:$(sed -n 's/^port=//p' "$tmp/proxy.$r")/0
    fi
    hp=${url[$r]#redis://}
    "$B/latency_proxy" ping "${hp%/0}" 50 >"$tmp/ping.$r"
    measured[$r]=$(field rtt_ms_p50 "$tmp/ping.$r")
done

# fresh N: an empty server loaded with N steps; prints the old key count.
fresh() { fresh_at "$direct" "$1"; }

# note KIND KEY CONTENDER KEYS NAME: a result line from NAME's timing.
note() {
    echo "$1 $2 $3 $(py "print(round($4 / max($(cat "$tmp/$5.wall"), 1e-9)))") $(cat "$tmp/$5.rss")" >>"$res"
}

raw() { # raw KIND KEY URL KEYS
    timed raw "$B/raw_copy" "$3"
    echo "$1 $2 raw $(field keys_per_s "$tmp/raw.out") $(cat "$tmp/raw.rss")" >>"$res"
}

# walk KIND KEY URL KEYS: the five walks on a fresh load, the phase moves a
# rollout makes between them (forced where only the timing matters: the
# preconditions are exercised by the tests), each over URL.
walk() {
    local kind=$1 key=$2 u=$3 keys=$4
    local s=("$build/stepq" -u "$u")
    "$build/stepq" -u "$direct" migrate phase dual-write >/dev/null
    timed backfill "${s[@]}" migrate backfill --json
    note "$kind" "$key" backfill "$keys" backfill
    timed verify "${s[@]}" migrate verify --json
    note "$kind" "$key" verify "$keys" verify
    # The floor of any verify over this link: both keys of every pair read
    # whole (bench/raw_copy --read), nothing compared, no expiry, no
    # snapshot.
    if [ "$kind" = link ]; then
        timed floor "$B/raw_copy" --read "$u" 2500
        echo "$kind $key floor $(field keys_per_s "$tmp/floor.out") $(cat "$tmp/floor.rss")" >>"$res"
    fi
    # The reconcile walk, new from old (every pair COPY REPLACE'd).
    if [[ "$skip" != *" reconcile "* ]]; then
        timed repair "${s[@]}" migrate backfill --repair --json
        note "$kind" "$key" repair "$keys" repair
    fi
    "$build/stepq" -u "$direct" migrate phase dual-read --force --reason bench >/dev/null
    "$build/stepq" -u "$direct" migrate phase step-primary --force --reason bench >/dev/null
    "$build/stepq" -u "$direct" migrate phase step --force --reason bench >/dev/null
    # The rollback out of step: the survey and the two reconcile passes,
    # old from new (three walks of both sides); then forward again. The
    # reconcile's writes come before the move, so cleanup does not take
    # them for a reader (one second: OBJECT IDLETIME counts whole seconds).
    if [[ "$skip" != *" reconcile "* ]]; then
        timed rollback "${s[@]}" migrate rollback --json
        note "$kind" "$key" rollback "$keys" rollback
        sleep 1
        "$build/stepq" -u "$direct" migrate phase step --force --reason bench >/dev/null
        sleep 1
    fi
    timed backup "${s[@]}" migrate backup --out "$tmp/old.bak" --quiet
    note "$kind" "$key" backup "$keys" backup
    timed cleanup "${s[@]}" migrate cleanup --backup "$tmp/old.bak" --quiet
    note "$kind" "$key" cleanup "$keys" cleanup
    timed restore "${s[@]}" migrate restore "$tmp/old.bak" --quiet
    note "$kind" "$key" restore "$keys" restore
    echo "$kind $key backup_mib $(du -m "$tmp/old.bak" | cut -f1) 0" >>"$res"
    rm -f "$tmp/old.bak"
}

# best KIND KEY CONTENDER: the best keys/s, and the largest RSS, of the runs.
best() { awk -v k="$1" -v n="$2" -v c="$3" '$1==k && $2==n && $3==c && $4>b {b=$4} END {print b+0}' "$res"; }
# median KIND KEY CONTENDER: the median keys/s of the runs; runs KIND KEY
# CONTENDER: each run's, in order.
median() {
    awk -v k="$1" -v n="$2" -v c="$3" '$1==k && $2==n && $3==c {print $4}' "$res" | sort -n |
        awk '{v[NR]=$1} END {print NR ? (NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2) : 0}'
}
runs() { awk -v k="$1" -v n="$2" -v c="$3" '$1==k && $2==n && $3==c {printf "%s ", $4}' "$res"; }
maxrss() { awk -v k="$1" -v n="$2" -v c="$3" '$1==k && $2==n && $3==c && $5>m {m=$5} END {printf "%.1f", m/1024}' "$res"; }

echo "## scale: the walks over a link and at size ($(date -u +%H:%MZ); $(nproc) cores," \
    "$(awk '/MemAvailable/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) available)"
if [[ "$skip" != *" link "* ]]; then
    keys=0
    for _ in $(seq "$rounds"); do
        for r in $rtts; do # the contenders take turns, RTT by RTT
            keys=$(fresh "$link_n")
            raw link "$r" "${url[$r]}" "$keys"
            fresh "$link_n" >/dev/null
            walk link "$r" "${url[$r]}" "$keys"
        done
    done
    echo
    echo "### over a link: $link_n steps ($keys old keys), best of $rounds, keys/s and ratio to the raw limit over the same link"
    printf '%-9s %-9s' "RTT set" "measured"
    for c in raw $walks; do printf ' %9s' "$c"; done
    printf '  %s\n' "verify/backfill"
    for r in $rtts; do
        printf '%-9s %-9s' "${r} ms" "${measured[$r]} ms"
        rw=$(best link "$r" raw)
        for c in raw $walks; do printf ' %9s' "$(best link "$r" "$c")"; done
        printf '  %.2fx\n' "$(py "print($(best link "$r" verify) / max($(best link "$r" backfill), 1))")"
        printf '%-19s' "  ratio to raw"
        for c in raw $walks; do printf ' %8.2fx' "$(py "print($(best link "$r" "$c") / max($rw, 1))")"; done
        echo
        # The raw limit's own spread from run to run moves every ratio
        # above: the medians, side by side, and each run of the raw limit.
        rm_=$(median link "$r" raw)
        printf '%-19s' "  median, ratio"
        for c in raw $walks; do printf ' %8.2fx' "$(py "print($(median link "$r" "$c") / max($rm_, 1))")"; done
        printf '  (raw median %s; its runs: %s)\n' "$rm_" "$(runs link "$r" raw)"
        fl=$(best link "$r" floor)
        printf '  verify floor (both keys of every pair read, nothing else): %s keys/s, %.2fx raw; verify at %.2fx of it\n' \
            "$fl" "$(py "print($fl / max($rw, 1))")" "$(py "print($(best link "$r" verify) / max($fl, 1))")"
    done
    echo "(target: each walk >= 0.70x raw at loopback and 2 ms; verify >= 0.50x backfill)"
fi

if [[ "$skip" != *" sizes "* ]]; then
    echo
    echo "### at size, loopback TCP: keys/s (peak RSS MiB of the stepq process)"
    printf '%-10s %-9s' "steps" "old keys"
    for c in raw $walks; do printf ' %16s' "$c"; done
    echo
    largest=$(echo "$sizes" | tr ' ' '\n' | sort -n | tail -1)
    per_step=0
    for n in $sizes; do
        cli FLUSHALL >/dev/null
        # (kB times 1024 in python: mawk's %d stops at 2^31)
        avail=$(py "print($(awk '/MemAvailable/ {print $2}' /proc/meminfo) * 1024)")
        # The old keys and their copy, 2.2 times the loaded data (from the
        # last load, per step), and room to spare for everything else.
        # Before any load: 1300 bytes a step, as load_legacy's were measured.
        [ "$per_step" = 0 ] && per_step=1300
        need=$(py "print(int($n * $per_step * 2.2 + (2 << 30)))")
        if [ "$need" -gt "$avail" ]; then
            echo "$n steps: skipped: Redis would need about $((need >> 30)) GiB, $((avail >> 30)) GiB available"
            continue
        fi
        # A guard for the machine's other tenants: Redis refuses writes
        # (and the bench fails) rather than taking what they need.
        cli CONFIG SET maxmemory "$((avail - (2 << 30)))" >/dev/null
        keys=$(fresh "$n")
        per_step=$(py "print(int($(cli INFO memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p') / $n))")
        raw size "$n" "$direct" "$keys"
        if [ "$n" = "$largest" ] && [[ "$skip" != *" lifecycle "* ]]; then
            cli FLUSHALL >/dev/null
            "$B/load_legacy" "$direct" "$n" >/dev/null
            "$build/stepq" -u "$direct" migrate phase dual-write >/dev/null
            life=redis://127.0.0.1:$port/1
            "$B/bench_queue" "$life" 20000 job 8 >"$tmp/life.idle"
            "$build/stepq" -u "$direct" migrate backfill --max-latency-ms 1 --quiet >/dev/null 2>&1 &
            bf=$!
            pids+=("$bf")
            sleep 2
            "$B/bench_queue" "$life" 20000 job 8 >"$tmp/life.busy"
            kill "$bf" 2>/dev/null || true
            wait "$bf" 2>/dev/null || true
        fi
        fresh "$n" >/dev/null
        walk size "$n" "$direct" "$keys"
        printf '%-10s %-9s' "$n" "$keys"
        for c in raw $walks; do
            rss=$(maxrss size "$n" "$c")
            [ "$c" = raw ] && rss=""
            printf ' %16s' "$(best size "$n" "$c")${rss:+ ($rss)}"
        done
        echo
    done
    echo "(target: peak RSS under 32 MiB at every size, flat with N)"
    if [ -f "$tmp/life.busy" ]; then
        i=$(sed -n 's/.*: \([0-9]*\) steps\/s.*/\1/p' "$tmp/life.idle")
        b=$(sed -n 's/.*: \([0-9]*\) steps\/s.*/\1/p' "$tmp/life.busy")
        echo
        echo "### queue lifecycle (8 clients, database 1) beside a $largest-step backfill --max-latency-ms 1"
        printf '%-44s %10s\n' "idle" "$i steps/s"
        printf '%-44s %10s  %.2fx of idle\n' "while the throttled backfill runs" "$b steps/s" "$(py "print($b / max($i, 1))")"
    fi
fi

# The formula: T(N, RTT) = N * (a + b * RTT), per walk, a from loopback and
# b from the largest round trip of part 1; checked against the rest.
if [[ "$skip" != *" link "* ]]; then
    echo
    echo "### walk time T(N, RTT) = N * (a + b * RTT): a, b fitted at 0 and the largest RTT; predicted vs measured"
    python3 - "$res" "$link_n" $rtts <<'PY'
import sys
res, rtts = sys.argv[1], [float(x) for x in sys.argv[3:]]
best = {}
for line in open(res):
    k, n, c, rate, rss = line.split()
    if c == "backup_mib":
        continue
    key = (k, float(n), c)
    best[key] = max(best.get(key, 0), int(rate))
hi = max(rtts)
print("%-9s %12s %12s   %s" % ("walk", "a (us/key)", "b (us/key/ms)", "check: predicted / measured keys/s"))
for c in ["raw", "backfill", "verify", "repair", "rollback", "backup", "cleanup", "restore"]:
    r0, rh = best.get(("link", 0.0, c)), best.get(("link", hi, c))
    if not r0 or not rh:
        continue
    a = 1e6 / r0
    b = (1e6 / rh - a) / hi if hi > 0 else 0
    checks = []
    for r in rtts:
        if r in (0.0, hi):
            continue
        m = best.get(("link", r, c))
        if m:
            checks.append("%g ms: %d / %d" % (r, round(1e6 / (a + b * r)), m))
    for (k, n, cc), m in sorted(best.items()):
        if k == "size" and cc == c:
            checks.append("%d steps: %d / %d" % (n, round(1e6 / a), m))
    print("%-9s %12.2f %12.2f   %s" % (c, a, b, "; ".join(checks)))
PY
fi
echo
