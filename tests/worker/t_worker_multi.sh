#!/usr/bin/env bash
# One worker, several namespaces (issue 12, "many queues, one fleet"): it
# registers in each, claims from all of them in turn (a busy namespace does
# not starve another), gives an empty namespace's share to the others, hands
# each command its step's namespace, and every step is completed exactly
# once, in its own namespace. Database 104.
. "$(dirname "$0")/lib.sh"

A='{t104a}:' B='{t104b}:' C='{t104c}:'
cat >"$TMP/job.sh" <<'SH'
#!/usr/bin/env bash
echo "$STEPQ_NAMESPACE $STEPQ_STEP_ID" >>"$LOG"
sleep 0.02
echo '{"ok":true}'
SH
chmod +x "$TMP/job.sh"
export LOG=$TMP/ran.log
: >"$LOG"

for _ in $(seq 1 20); do $S --namespace "$A" submit --type t >>"$TMP/a.ids"; done
for _ in $(seq 1 20); do $S --namespace "$B" submit --type t >>"$TMP/b.ids"; done

# Usage errors change nothing.
expect "a namespace given twice is refused (exit 2)" \
    bash -c "$S worker --namespace '$A' --namespace '$A' -- true; [ \$? = 2 ]"
expect "an empty name in a list is refused (exit 2)" \
    bash -c "$S worker --namespace '$A,' -- true; [ \$? = 2 ]"
expect "one namespace per command elsewhere (exit 2)" \
    bash -c "$S --namespace '$A' --namespace '$B' list; [ \$? = 2 ]"

# One slot, three namespaces (C has nothing): turns between A and B.
start_worker w104 --namespace "$A,$B" --namespace "$C" --concurrency 1 -- "$TMP/job.sh"
done40() { [ "$(wc -l <"$LOG")" -ge 40 ]; }
expect "the 40 steps of two namespaces run" wait_for 60 done40
registered() { $S --namespace "$1" workers | grep -q w104; }
expect "registered in the first namespace" registered "$A"
expect "registered in the second" registered "$B"
expect "registered in the empty one" registered "$C"

first10=$(head -10 "$LOG" | awk '{print $1}')
na=$(grep -cF "$A" <<<"$first10" || true)
nb=$(grep -cF "$B" <<<"$first10" || true)
echo "  of the first 10 steps run: $na from $A, $nb from $B"
expect "turns: both namespaces among the first 10 steps (4 or more each)" \
    [ "$na" -ge 4 -a "$nb" -ge 4 ]
expect "each command got its step's namespace" bash -c "
    grep -F '$A' '$LOG' | awk '{print \$2}' | sort >'$TMP/ran.a'
    sort '$TMP/a.ids' | diff - '$TMP/ran.a'"
expect "the other namespace's steps likewise" bash -c "
    grep -F '$B' '$LOG' | awk '{print \$2}' | sort >'$TMP/ran.b'
    sort '$TMP/b.ids' | diff - '$TMP/ran.b'"
expect "no step ran twice" eq "$(awk '{print $2}' "$LOG" | sort | uniq -d | wc -l)" 0
all_completed() {
    local ns=$1 f=$2
    while read -r id; do
        [ "$($S --namespace "$ns" get "$id" | field status)" = completed ] || return 1
    done <"$f"
}
expect "every step of A completed, in A" wait_for 10 all_completed "$A" "$TMP/a.ids"
expect "every step of B completed, in B" wait_for 10 all_completed "$B" "$TMP/b.ids"

# Work arriving later in the empty namespace is picked up.
idc=$($S --namespace "$C" submit --type t)
expect "a step submitted later to the idle namespace runs" \
    wait_for 10 bash -c "[ \"\$($S --namespace '$C' get $idc | jq -r .status)\" = completed ]"

kill -TERM "$WPID"
expect "the worker stops on SIGTERM" wait_for 10 dead "$WPID"
expect "and deregisters from every namespace" bash -c "
    ! $S --namespace '$A' workers | grep -q w104 &&
    ! $S --namespace '$B' workers | grep -q w104 &&
    ! $S --namespace '$C' workers | grep -q w104"
finish
