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

PAN_CFLAGS="-O2 -DSAFETY -DNOBOUNDCHECK -DMEMLIM=3000 -w"

# The configurations: the walk is explored in two stretches (the whole
# walk at once is too big for minutes), without and with the legacy writer.
CONFIGS=(
    "walk-early|-DPH_LO=0 -DPH_HI=2"
    "walk-late|-DPH_LO=3 -DPH_HI=4"
    "legacy-early|-DPH_LO=0 -DPH_HI=2 -DLEGACY=2 -DLITE"
    "legacy-late|-DPH_LO=3 -DPH_HI=4 -DLEGACY=2 -DLITE"
)

# trail FLAGS: the counterexample pan wrote, as readable steps
trail() {
    spin $1 -t stepq.pml 2>&1 | grep -E '@@|violated' |
        sed -E 's/^ +//; s/ +/ /g; s/ \)/)/g; s/^@@ //; s/^spin: stepq.pml:[0-9]+, Error: //'
}

# build FLAGS: the verifier pan of the model with these flags
build() {
    spin $1 -a stepq.pml >/dev/null
    gcc $PAN_CFLAGS -o pan pan.c
}

# search DEPTH: runs pan (depth bound DEPTH); prints its summary lines
search() {
    ./pan -m"$1" -w26 -n 2>&1 | grep -E 'errors:|states, stored|elapsed time|violated' || true
}

fail=0
total_states=0
start=$(date +%s)
for c in "${CONFIGS[@]}"; do
    name=${c%%|*}
    flags=${c#*|}
    build "$flags"
    out=$(search 3000000)
    states=$(echo "$out" | awk '/states, stored/ {print $1}')
    secs=$(echo "$out" | awk '/elapsed time/ {print $4}')
    errs=$(echo "$out" | sed -n 's/.*errors: \([0-9]*\).*/\1/p')
    total_states=$((total_states + ${states:-0}))
    if [ "${errs:-1}" != 0 ]; then
        echo "model $name ($flags): VIOLATION after $states states"
        echo "$out" | grep violated || true
        # a shorter trail, when one is within reach
        found=0
        for d in 150 400; do
            if search $d | grep -q 'errors: [1-9]'; then
                found=1
                break
            fi
        done
        [ $found = 1 ] || search 3000000 >/dev/null
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
    # the shortest depth bound that finds one gives the shortest trail
    build "$flags"
    for d in 120 400 1000 3000 3000000; do
        out=$(search $d)
        echo "$out" | grep -Eq "violated ($expect)\b" && break
    done
    if echo "$out" | grep -Eq "violated ($expect)\b"; then
        caught=$((caught + 1))
        echo "mutant $name: caught ($(echo "$out" | sed -n 's/.*violated \([a-z0-9_]*\).*/\1/p'))"
        trail "$flags" | sed 's/^/    /' | tail -n 16
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
