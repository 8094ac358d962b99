#!/usr/bin/env bash
# model/run.sh - make model: the exhaustive search of model/stepq.pml in
# each of its configurations, then every seeded bug of model/mutants/,
# each of which must yield a counterexample (docs/model.md).
#
# A violation in a configuration fails the run and prints the trail as the
# model's own '@@' lines (what each process did, in order). Jobs run
# $MODEL_JOBS at a time (default: the number of CPUs), each in its own
# directory. Exit 0 when every configuration is clean and every mutant is
# caught.
set -euo pipefail
cd "$(dirname "$0")"
DIR=$PWD

if ! command -v spin >/dev/null || ! command -v gcc >/dev/null; then
    STEPQ_BOOTSTRAP_EXTRA="spin ${STEPQ_BOOTSTRAP_EXTRA:-}" ../scripts/bootstrap.sh
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The configurations: the walk is explored in two stretches (the whole
# walk at once is too big for minutes), without and with the legacy writer.
CONFIGS=(
    "walk-early|-DPH_LO=0 -DPH_HI=2"
    "walk-late|-DPH_LO=3 -DPH_HI=4"
    "legacy-early|-DPH_LO=0 -DPH_HI=2 -DLEGACY=2 -DLITE"
    "legacy-late|-DPH_LO=3 -DPH_HI=4 -DLEGACY=2 -DLITE"
)

# job KIND NAME FLAGS [EXPECT [DEPTH]]: one search in $WORK/NAME, its
# report in $WORK/NAME/report and its verdict (ok or bad) in .../verdict.
# A configuration is compiled with -O2 (its search is long); a mutant with
# -O0 (its search is short, the compile of pan.c is not).
job() {
    local kind=$1 name=$2 flags=$3 expect=${4:-} depth=${5:-}
    local d=$WORK/$name out
    mkdir -p "$d"
    cd "$d"
    cp "$DIR/stepq.pml" .
    spin $flags -a stepq.pml >/dev/null
    if [ "$kind" = config ]; then
        gcc -O2 -DSAFETY -DNOBOUNDCHECK -DMEMLIM=3000 -w -o pan pan.c
        out=$(./pan -m3000000 -w26 -n 2>&1)
    else
        gcc -O0 -DSAFETY -DNOBOUNDCHECK -DMEMLIM=3000 -w -o pan pan.c
        for m in $depth 3000000; do
            out=$(./pan -m"$m" -w24 -n 2>&1)
            echo "$out" | grep -Eq "violated ($expect)\\b" && break
        done
    fi
    local states secs viol
    states=$(echo "$out" | awk '/states, stored/ {print $1}')
    secs=$(echo "$out" | awk '/elapsed time/ {print $4}')
    viol=$(echo "$out" | sed -n 's/.*assertion violated \([a-z0-9_]*\).*/\1/p' | head -n 1)
    {
        if [ "$kind" = config ] && [ -z "$viol" ] && echo "$out" | grep -q 'errors: 0'; then
            echo ok >verdict
            echo "model $name: $states states, ${secs}s, no violation"
        elif [ "$kind" = config ]; then
            echo bad >verdict
            echo "model $name ($flags): VIOLATION of ${viol:-?} after ${states:-?} states:"
            trail "$flags" | sed 's/^/    /'
        elif [ -n "$viol" ] && echo "$viol" | grep -Eqx "$expect"; then
            echo ok >verdict
            echo "mutant $name: caught ($viol, ${secs}s); the trail's end:"
            trail "$flags" | tail -n 12 | sed 's/^/    /'
        else
            echo bad >verdict
            echo "mutant $name: NOT CAUGHT (expected $expect; got ${viol:-no violation})"
        fi
        echo "$states" >states
    } >report
}

# trail FLAGS: the counterexample pan wrote, as readable steps
trail() {
    spin $1 -t stepq.pml 2>&1 | grep -E '@@|violated' |
        sed -E 's/^ +//; s/ +/ /g; s/ \)/)/g; s/^@@ //; s/^spin: stepq.pml:[0-9]+, Error: //'
}

export -f job trail
export DIR WORK

start=$(date +%s)
{
    for c in "${CONFIGS[@]}"; do
        printf 'config\0%s\0%s\0\0\0' "${c%%|*}" "${c#*|}"
    done
    for m in "$DIR"/mutants/*.mut; do
        printf 'mutant\0%s\0%s\0%s\0%s\0' "$(basename "$m" .mut)" \
            "$(sed -n 's/^flags: *//p' "$m")" "$(sed -n 's/^expect: *//p' "$m")" \
            "$(sed -n 's/^depth: *//p' "$m")"
    done
} | xargs -0 -n 5 -P "${MODEL_JOBS:-$(nproc 2>/dev/null || echo 2)}" \
    bash -c 'job "$@" || { mkdir -p "$WORK/$2"; echo bad >"$WORK/$2/verdict"; \
             echo "$1 $2: the search failed to run" >"$WORK/$2/report"; }' _

fail=0
states=0
caught=0
missed=0
for c in "${CONFIGS[@]}"; do
    name=${c%%|*}
    cat "$WORK/$name/report"
    [ "$(cat "$WORK/$name/verdict")" = ok ] || fail=1
    states=$((states + $(cat "$WORK/$name/states" 2>/dev/null || echo 0)))
done
for m in "$DIR"/mutants/*.mut; do
    name=$(basename "$m" .mut)
    cat "$WORK/$name/report"
    if [ "$(cat "$WORK/$name/verdict")" = ok ]; then
        caught=$((caught + 1))
    else
        missed=$((missed + 1))
        fail=1
    fi
done
echo "model: $states states in ${#CONFIGS[@]} configurations, $caught mutants caught," \
    "$missed missed, $(($(date +%s) - start))s"
exit $fail
