#!/usr/bin/env bash
# model/run.sh - make model: the exhaustive search of model/stepq.pml in
# each of its configurations, then every seeded bug of model/mutants/,
# each of which must yield a counterexample (docs/model.md).
#
# A violation in a configuration fails the run and prints the trail as the
# model's own '@@' lines (what each process did, in order). Exit 0 when
# every configuration is clean and every mutant is caught.
set -euo pipefail
cd "$(dirname "$0")"
MODEL=$PWD/stepq.pml

if ! command -v spin >/dev/null || ! command -v gcc >/dev/null; then
    STEPQ_BOOTSTRAP_EXTRA="spin ${STEPQ_BOOTSTRAP_EXTRA:-}" ../scripts/bootstrap.sh
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$MODEL" "$WORK/"
cd "$WORK"

PAN_CFLAGS="-O2 -DSAFETY -DCOLLAPSE -DMEMLIM=4000 -w"

# The configurations: the walk is explored in two stretches (the whole
# walk at once is too big for minutes), without and with the legacy writer.
CONFIGS=(
    "walk-early|-DPH_LO=0 -DPH_HI=2"
    "walk-late|-DPH_LO=3 -DPH_HI=4"
    "legacy-early|-DPH_LO=0 -DPH_HI=2 -DLEGACY=2"
    "legacy-late|-DPH_LO=3 -DPH_HI=4 -DLEGACY=2"
)

# trail FLAGS: the counterexample pan wrote, as readable steps
trail() {
    spin $1 -t stepq.pml 2>&1 | grep -E '@@|violated' | sed -E 's/^ +//; s/ +/ /g; s/^@@ //'
}

# search FLAGS DEPTH: builds and runs pan; prints its summary lines
search() {
    spin $1 -a stepq.pml >/dev/null
    gcc $PAN_CFLAGS -o pan pan.c
    ./pan -m"$2" -w25 -n 2>&1 | grep -E 'errors:|states, stored|elapsed time|violated' || true
}

fail=0
total_states=0
start=$(date +%s)
for c in "${CONFIGS[@]}"; do
    name=${c%%|*}
    flags=${c#*|}
    out=$(search "$flags" 3000000)
    states=$(echo "$out" | awk '/states, stored/ {print $1}')
    secs=$(echo "$out" | awk '/elapsed time/ {print $4}')
    errs=$(echo "$out" | sed -n 's/.*errors: \([0-9]*\).*/\1/p')
    total_states=$((total_states + ${states:-0}))
    if [ "${errs:-1}" != 0 ]; then
        echo "model $name ($flags): VIOLATION after $states states"
        echo "$out" | grep violated || true
        # a shorter trail, when one is within reach
        short=$(search "$flags" 400)
        if echo "$short" | grep -q 'errors: [1-9]'; then
            echo "$short" | grep violated || true
        else
            search "$flags" 3000000 >/dev/null
        fi
        trail "$flags" | sed 's/^/    /'
        fail=1
    else
        echo "model $name: $states states, ${secs}s, no violation"
    fi
done

caught=0
missed=0
for m in "$(dirname "$MODEL")"/mutants/*.mut; do
    name=$(basename "$m" .mut)
    flags=$(sed -n 's/^flags: *//p' "$m")
    expect=$(sed -n 's/^expect: *//p' "$m")
    out=$(search "$flags" 400)
    if ! echo "$out" | grep -q "violated $expect"; then
        out=$(search "$flags" 3000000)
    fi
    if echo "$out" | grep -q "violated $expect"; then
        caught=$((caught + 1))
        echo "mutant $name: caught ($expect)"
        trail "$flags" | sed 's/^/    /' | tail -n 14
    else
        missed=$((missed + 1))
        echo "mutant $name: NOT CAUGHT (expected $expect)"
        echo "$out" | sed 's/^/    /'
        fail=1
    fi
done

echo "model: $total_states states in ${#CONFIGS[@]} configurations, $caught mutants caught," \
    "$missed missed, $(($(date +%s) - start))s"
exit $fail
