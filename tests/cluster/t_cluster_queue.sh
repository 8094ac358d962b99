#!/usr/bin/env bash
# Queue operations on namespaces spread over all three masters: each
# namespace's keys land on the master that owns its tag's slot, whatever
# node the URL names (another master, a replica); refusals name the fix.
. "$(dirname "$0")/lib.sh"

set -- $(masters)
[ $# = 3 ] || { echo "expected 3 masters, got: $*" >&2; exit 1; }
A=$(ns_on qa "$1") B=$(ns_on qa "$2") C=$(ns_on qa "$3")
for ns in "$A" "$B" "$C"; do ns_clear "$ns"; done
echo "namespaces: $A on $1, $B on $2, $C on $3"

cycle() { # ns port: submit, claim, complete through the node at port
    local ns=$1 url=redis://127.0.0.1:$2 id tok
    id=$(REDIS_URL=$url $STEPQ --namespace "$ns" submit --type t --payload '{"n":1}')
    tok=$(REDIS_URL=$url $STEPQ --namespace "$ns" claim --worker w1 | jq -r .token)
    REDIS_URL=$url $STEPQ --namespace "$ns" complete "$id" --token "$tok" --result '{}'
    [ "$(REDIS_URL=$url $STEPQ --namespace "$ns" get "$id" | jq -r .status)" = completed ]
}

for ns in "$A" "$B" "$C"; do
    for p in $CLUSTER_PORTS; do
        check "a step of $ns through the node on $p" "cycle '$ns' $p"
    done
done

check "each namespace's keys are on its own master only" '
    for ns in "$A" "$B" "$C"; do
        own=$(ns_owner "$ns")
        n=$(redis-cli -p "$own" --scan --pattern "$ns*" | wc -l)
        [ "$n" -gt 3 ] || { echo "$ns: $n keys on $own"; exit 1; }
        for p in $(masters); do
            [ "$p" = "$own" ] && continue
            [ "$(redis-cli -p "$p" --scan --pattern "$ns*" | wc -l)" = 0 ] || { echo "$ns keys on $p"; exit 1; }
        done
    done'

check "the slot guard of queue scripts is never written" '
    for ns in "$A" "$B" "$C"; do
        [ "$(redis-cli -p "$(ns_owner "$ns")" exists "${ns}stepq:slot-guard")" = 0 ]
    done'

check "STEPQ_NAMESPACE works as --namespace does" '
    id=$(STEPQ_NAMESPACE=$B $STEPQ submit --type t)
    [ "$(redis-cli -p "$(ns_owner "$B")" exists "${B}job:$id")" = 1 ]'

check "migrate status reads the namespace on its master" '
    $STEPQ --namespace "$C" migrate status >/dev/null'

check_code 2 "a namespace without a hash tag is refused, saying what to do" '
    $STEPQ --namespace plain: submit --type t 2>&1 | tee /dev/stderr | grep -q "has no hash tag" &&
    $STEPQ --namespace plain: submit --type t 2>&1 | grep -q -- "--namespace" ;
    $STEPQ --namespace plain: submit --type t'
check_code 2 "no namespace at all is refused on a cluster" '$STEPQ submit --type t'
check_code 2 "a database other than 0 is refused on a cluster" \
    'REDIS_URL=$CLUSTER_URL/3 $STEPQ --namespace "$A" submit --type t'
check "nothing was written by the refusals" '
    for p in $(masters); do [ -z "$(redis-cli -p "$p" --scan --pattern "plain:*")" ]; done'

for ns in "$A" "$B" "$C"; do ns_clear "$ns"; done
finish
