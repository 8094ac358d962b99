#!/usr/bin/env bash
# t_runbook.sh - docs/migration.md is a test (database 115): every command
# of its blocks marked <!-- runbook --> runs, in the page's order, on a
# database holding steps in every state, and must exit as its `# exit N`
# comment says (0 when it says nothing). A command the tool refuses makes
# the page wrong, and this test fails naming the line.
. "$(dirname "$0")/../cli/lib.sh"
doc=$(cd "$(dirname "$0")/../.." && pwd)/docs/migration.md
work=$(mktemp -d)
trap 'rm -rf "$work" "$tmpout"' EXIT
stepq() { "$STEPQ" "$@"; }
export -f stepq 2>/dev/null || true
export STEPQ_OPERATOR=runbook-test

# extract: "LINE<TAB>EXPECTED<TAB>COMMAND" for each command of a marked block.
# A block is the indented lines after the marker (blank lines between the
# marker and the block allowed); a skip marker takes its block out.
extract() {
    awk '
        /^<!-- runbook -->/ { want = 1; inblock = 0; next }
        /^<!-- runbook: skip/ { want = 0; inblock = 0; next }
        want && /^    [^ ]/ { inblock = 1
            cmd = substr($0, 5); ex = 0
            if (match(cmd, /#[ ]*exit[ ]+[0-9]+/)) {
                e = substr(cmd, RSTART, RLENGTH); gsub(/[^0-9]/, "", e); ex = e
            }
            sub(/[ ]+#.*$/, "", cmd)
            printf "%d\t%d\t%s\n", NR, ex, cmd; next }
        want && inblock && !/^    / && !/^$/ { want = 0; inblock = 0 }
    ' "$doc"
}
extract >"$work/commands"

# Every code block that runs stepq is either marked or skipped with a reason:
# a command added to the page without a marker would go untested.
expect_ok "every stepq block of the runbook is marked" '
    awk "
        /^<!-- runbook/ { marked = NR }
        /^    stepq / && !inblk { inblk = 1; if (NR - marked > 2) { print \"unmarked block at line \" NR; bad = 1 } }
        !/^    / && !/^$/ { inblk = 0 }
        END { exit bad }
    " "$doc"'
n=$(wc -l <"$work/commands")
expect_ok "the runbook has commands for every phase ($n)" '[ "$n" -ge 20 ] &&
    for p in dual-write dual-read step-primary "phase step\$" cleanup rollback; do grep -q "$p" "$work/commands"; done'

# A queue with steps in every state, and a worker that stays registered.
for i in $(seq 1 60); do stepq submit --type rb --priority $((i % 4)) --payload "{\"i\":$i}" >/dev/null; done
for i in 1 2 3 4 5 6; do
    c=$(stepq claim --worker rb-w1)
    id=$(jq -r .id <<<"$c") tok=$(jq -r .token <<<"$c")
    case $i in
    1 | 2) stepq complete "$id" --token "$tok" --result '{"ok":true}' >/dev/null ;;
    3) stepq fail "$id" --token "$tok" --error boom --no-retry >/dev/null 2>&1 || stepq fail "$id" --token "$tok" --error boom >/dev/null ;;
    esac
done

cd "$work"
while IFS=$'\t' read -r line want cmd; do
    expect_code "$want" "docs/migration.md:$line: $cmd" "$cmd"
done <"$work/commands"

expect_ok "the walk out and back ends in job, the steps all there" '
    [ "$(stepq migrate phase)" = job ] && [ "$(stepq list pending --limit 1000 | wc -l)" -ge 50 ]'
finish
