#!/usr/bin/env bash
# fuzz/run.sh BUILD_DIR SECONDS - runs every libFuzzer target for SECONDS,
# starting from its seed corpus (fuzz/corpus/NAME). A crash fails the run and
# leaves its input in BUILD_DIR/fuzz-crashes/ to be turned into a test.
# With FUZZ_RUNS=N set instead, each target runs N inputs from a fixed seed:
# the same inputs every time (what CI uses, so that a red CI is a real,
# reproducible finding and not the luck of the draw).
set -euo pipefail
build=$1
secs=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$build/fuzz-crashes"
status=0
for bin in "$build"/fuzz/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin" | sed 's/^fuzz_//')
    work="$build/fuzz-corpus/$name"
    mkdir -p "$work"
    if [ -n "${FUZZ_RUNS:-}" ]; then
        limit=(-runs="$FUZZ_RUNS" -seed=1)
        echo "== fuzz $name for $FUZZ_RUNS runs (seed 1)"
    else
        limit=(-max_total_time="$secs")
        echo "== fuzz $name for ${secs}s"
    fi
    if ! "$bin" "${limit[@]}" -max_len=65536 -timeout=10 -print_final_stats=0 \
        -artifact_prefix="$build/fuzz-crashes/$name-" "$work" "$root/fuzz/corpus/$name" \
        >"$build/fuzz-$name.log" 2>&1; then
        echo "fuzz $name: FAILED (see $build/fuzz-$name.log and $build/fuzz-crashes/)"
        tail -30 "$build/fuzz-$name.log"
        status=1
    else
        grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs" "$build/fuzz-$name.log" | tail -1 || true
    fi
done
exit $status
