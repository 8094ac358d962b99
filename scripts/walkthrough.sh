#!/usr/bin/env bash
# scripts/walkthrough.sh STEPQ - a short walk through the queue and the
# phase moves against $REDIS_URL (an empty database).
set -euo pipefail
S=$1
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

echo "== phase: $($S migrate phase)"
ids=()
for p in 1 5 3; do ids+=("$($S submit --type demo --priority $p --payload "{\"n\":$p}")"); done
echo "== submitted ${#ids[@]} steps: ${ids[*]}"
for phase in dual-write dual-read; do
    if [ "$phase" = dual-read ]; then
        # Reads move to the new keys only after a backfill and a clean verify.
        $S migrate backfill
        $S migrate verify
    fi
    $S migrate phase "$phase" --reason "walkthrough"
    step=$($S claim --worker demo-worker)
    id=$(echo "$step" | json_field id)
    tok=$(echo "$step" | json_field token)
    echo "== [$phase] claimed $id (priority $(echo "$step" | json_field priority))"
    $S progress "$id" --token "$tok" --percent 50 --message halfway
    $S complete "$id" --token "$tok" --result '{"ok":true}'
    echo "== [$phase] completed: $($S get "$id")"
done
$S migrate status
