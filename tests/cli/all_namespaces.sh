#!/usr/bin/env bash
# all_namespaces.sh - the registry of namespaces and `migrate ...
# --all-namespaces` on one server (issue 12): every namespace stepq wrote to
# is listed with its phase and key counts; a command runs once per namespace
# with one line each and a summary, stops at the first refusal unless
# --keep-going, and exits with the worst code. Database 105.
set -u
. "$(dirname "$0")/lib.sh"
tmp=$(mktemp -d) && trap 'rm -rf "$tmp" "$tmpout"' EXIT
S=$STEPQ
export STEPQ_OPERATOR=all_namespaces
A='{t105a}:' B='{t105b}:'

for ns in "" "$A" "$B"; do
    for _ in 1 2 3; do $S --namespace "$ns" submit --type t >/dev/null; done
done
$S --namespace '{t105z}:' list >/dev/null # a read registers nothing

expect_ok "the registry holds the namespaces written to, and only those" '
    [ "$(rcli SMEMBERS "{stepq}:namespaces" | sort | tr "\n" " ")" = " {t105a}: {t105b}: " ]'
expect_ok "status --all-namespaces: one line each, phase and key counts" '
    $S migrate status --all-namespaces >$tmp/st
    cat $tmp/st
    [ "$(wc -l <$tmp/st)" = 4 ] &&
    grep -E "^\(default\) .* job +4 +0$" $tmp/st && grep -E "^\{t105a\}: .* job +4 +0$" $tmp/st'
expect_ok "status --all-namespaces --json" '
    $S migrate status --all-namespaces --json >$tmp/st.json
    [ "$(jq -r ".namespaces | map(.namespace) | join(\",\")" $tmp/st.json)" = ",{t105a}:,{t105b}:" ] &&
    [ "$(jq -r ".namespaces[1].phase" $tmp/st.json)" = job ] &&
    [ "$(jq -r ".namespaces[1].old_keys" $tmp/st.json)" = 4 ]'
expect_code 2 "--namespace and --all-namespaces together are refused" \
    '$S --namespace "$A" migrate phase dual-write --all-namespaces'
expect_ok "... and changed nothing" '[ "$($S --namespace "$A" migrate phase)" = job ]'

expect_ok "phase dual-write --all-namespaces moves every one" '
    $S migrate phase dual-write --all-namespaces >$tmp/out; cat $tmp/out
    [ "$(grep -c " done " $tmp/out)" = 3 ] && grep -q "3 done" $tmp/out &&
    for ns in "" "$A" "$B"; do [ "$($S --namespace "$ns" migrate phase)" = dual-write ] || exit 1; done'

# A refusal stops the run: the namespaces after it are not touched.
expect_code 4 "a refused move stops at the first namespace (exit 4)" '
    $S migrate phase step --all-namespaces >$tmp/out; rc=$?; cat $tmp/out; exit $rc'
expect_ok "... which says why, and that two were not run" '
    grep -q "REFUSED .*one step at a time" $tmp/out && grep -q "2 not run" $tmp/out'
expect_code 4 "--keep-going runs them all (still exit 4)" '
    $S migrate phase step --all-namespaces --keep-going >$tmp/out; rc=$?; cat $tmp/out; exit $rc'
expect_ok "... three refusals, none not run" '
    grep -q "3 refused" $tmp/out && ! grep -q "not run" $tmp/out'

expect_ok "backfill --all-namespaces --parallel 2" '
    $S migrate backfill --all-namespaces --parallel 2 >$tmp/out; cat $tmp/out
    grep -q "3 done" $tmp/out'
# One namespace differs: verify fails there (1) and is refused nowhere: the
# worst code is 1, and --keep-going still verifies the one after it.
id=$($S --namespace "$A" list pending | jq -r ".[0]" 2>/dev/null || $S --namespace "$A" list pending | head -1)
rcli HSET "{t105a}:step:$id" payload '{"changed":1}' >/dev/null
expect_code 1 "verify --all-namespaces --keep-going: the worst code (1)" '
    $S migrate verify --all-namespaces --keep-going >$tmp/out; rc=$?; cat $tmp/out; exit $rc'
expect_ok "... failed in the damaged namespace, done in the others" '
    grep -E "^\{t105a\}: +FAILED" $tmp/out && grep -E "^\{t105b\}: +done" $tmp/out &&
    grep -E "^\(default\) +done" $tmp/out'
expect_code 0 "B alone rolls back to job" '
    $S --namespace "$B" migrate rollback >/dev/null'
expect_code 3 "rollback --all-namespaces: (default) and A roll back, B has nothing (3)" '
    $S migrate rollback --all-namespaces >$tmp/out; rc=$?; cat $tmp/out; exit $rc'

# Files: one per namespace, in a directory or from a template.
expect_code 2 "backup --all-namespaces into one file is refused" '
    $S migrate backup --all-namespaces --out $tmp/one.bk'
expect_ok "... and wrote nothing" '[ ! -e $tmp/one.bk ]'
mkdir $tmp/bk
expect_ok "backup --all-namespaces --out DIR: a file per namespace" '
    $S migrate backup --all-namespaces --out $tmp/bk >$tmp/out; cat $tmp/out
    [ -s $tmp/bk/default.stepqbak ] && [ -s $tmp/bk/t105a.stepqbak ] && [ -s $tmp/bk/t105b.stepqbak ]'
expect_ok "backup --all-namespaces --out TEMPLATE with %n, --json" '
    $S migrate backup --all-namespaces --out "$tmp/%n.new.bk" --side new --json >$tmp/out
    [ -s $tmp/t105b.new.bk ] &&
    [ "$(jq -rs "map(select(.namespace)) | map(.exit) | join(\",\")" $tmp/out)" = "0,0,0" ] &&
    [ "$(jq -rs ".[-1].summary.done" $tmp/out)" = 3 ]'
finish
