#!/usr/bin/env bash
# t_http_health.sh - `stepq serve`'s migration health: the document, each
# rule of the verdict, the 2 s cache, the migration gauges of /metrics, and
# behaviour with Redis down.
. "$(dirname "$0")/lib.sh"

export STEPQ_API_TOKEN=t0ken-for-tests-16b
start_server "$tmp/serve.log"
expect "serve starts and prints its port" test -n "$port"

# --- /health/redis-migration ----------------------------------------------------
expect "migration health 200 when clean" is "$(req GET /health/redis-migration)" 200
expect "health document shape" json "j['healthy'] is True and j['reasons'] == [] and j['status'] == 'healthy' and list(j)[:3] == ['status', 'healthy', 'reasons'] and j['phase'] == 'job' and j['pin'] is None and isinstance(j['keys'], list) and 'counters' in j and j['backfill'] == {} and j['verify'] == {} and any(p['kind'] == 'serve' for p in j['processes'])"
expect "migrate status lists the server" sh -c "'$STEPQ' migrate status --json | grep -q '\"kind\":\"serve\"'"
# The cache: an answer is either the cached one (same checked_at, still 200)
# or, when 2 s have passed, a rebuilt one; never rebuilt sooner.
checked_at() { python3 -I -S -c 'import json,sys; print(json.load(open(sys.argv[1]))["checked_at"])' "$tmp/body"; }
req GET /health/redis-migration >/dev/null
a=$(checked_at)
# A verify or backfill record only counts where the phase reads what it
# compared (dual-write to step-primary); in job it is history.
rcli HSET stepq:phase phase dual-write dual_write_since 1 >/dev/null
rcli HSET stepq:verify clean 0 different 3 missing 1 ttl_off 0 >/dev/null
st=$(req GET /health/redis-migration)
b=$(checked_at)
expect "cached for 2 s, then rebuilt" test "$b:$st" = "$a:200" -o \( "$st" = 503 -a $((b - a)) -ge 2000 \)
n=$(curl -s "$url/health/redis-migration" "$url/health/redis-migration" "$url/health/redis-migration" \
    "$url/health/redis-migration" | grep -o '"checked_at":[0-9]*' | sort -u | wc -l)
expect "4 back-to-back requests share the cached document" test "$n" -le 2
sleep 2.1
expect "verify differences 503" is "$(req GET /health/redis-migration)" 503
expect "503 gives the reason, with a command allowed in dual-write" json "j['healthy'] is False and len(j['reasons']) == 1 and j['reasons'][0].startswith('the last verify found differences (different=3, missing=1') and \"'stepq migrate backfill --repair', then 'stepq migrate verify'\" in j['reasons'][0]"
# Each dual-write reason, followed as it says, clears.
rcli HSET job:E id E status completed >/dev/null
rcli HSET step:E id E status pending >/dev/null
expect "the advised repair and verify run" sh -c "'$STEPQ' migrate backfill --repair >/dev/null 2>&1 && '$STEPQ' migrate verify >/dev/null 2>&1"
sleep 2.1
expect "and clear the verify reason" is "$(req GET /health/redis-migration):$(rcli HGET step:E status)" 200:completed
rcli HSET stepq:phase untrusted_since 5 dual_write_since 6 >/dev/null
sleep 2.1
expect "untrusted 503" is "$(req GET /health/redis-migration)" 503
expect "its reason names the repair" json "len(j['reasons']) == 1 and j['reasons'][0].startswith('the new keys are untrusted') and \"'stepq migrate backfill --repair'\" in j['reasons'][0]"
expect "the advised repair runs" sh -c "'$STEPQ' migrate backfill --repair >/dev/null 2>&1"
sleep 2.1
expect "and clears the untrusted reason" is "$(req GET /health/redis-migration)" 200
rcli HSET stepq:backfill state done keys_done 10 keys_total 10 errors 2 >/dev/null
sleep 2.1
expect "backfill errors 503" is "$(req GET /health/redis-migration)" 503
expect "backfill reason" json "j['reasons'] == [\"the backfill failed (2 errors); read its log and run 'stepq migrate backfill' again (it resumes)\"]"
expect "the advised backfill runs" sh -c "'$STEPQ' migrate backfill >/dev/null 2>&1"
sleep 2.1
expect "and clears the backfill reason" is "$(req GET /health/redis-migration)" 200
rcli DEL job:E step:E >/dev/null
rcli HSET stepq:backfill state done keys_done 10 keys_total 10 errors 2 >/dev/null
rcli HSET stepq:phase phase job >/dev/null
sleep 2.1
expect "in job the records are history: 200" is "$(req GET /health/redis-migration)" 200
rcli HSET stepq:backfill errors 0 >/dev/null
# In dual-read a verify that keeps finding differences: the advised rollback
# --reconcile makes the old keys equal to the new ones and moves back.
rcli HSET stepq:phase phase dual-read >/dev/null
rcli HSET stepq:verify clean 0 different 1 missing 0 >/dev/null
rcli HSET step:D id D status completed >/dev/null
rcli HSET job:D id D status pending >/dev/null
sleep 2.1
expect "dual-read differences 503" is "$(req GET /health/redis-migration)" 503
expect "dual-read reason names rollback --reconcile" json "\"'stepq migrate rollback --reconcile'\" in j['reasons'][0]"
expect "a plain rollback is refused (exit 4) and names --reconcile" sh -c "'$STEPQ' migrate rollback >'$tmp/rb' 2>&1; test \$? = 4 && grep -q -- 'rollback --reconcile' '$tmp/rb'"
expect "the advised rollback --reconcile runs" sh -c "'$STEPQ' migrate rollback --reconcile >/dev/null"
expect "the old key now equals the new one" is "$(rcli HGET job:D status)" completed
sleep 2.1
expect "and health is clean, in dual-write" is "$(req GET /health/redis-migration):$(rcli HGET stepq:phase phase)" 200:dual-write
rcli DEL step:D job:D >/dev/null
rcli HSET stepq:backfill errors 0 >/dev/null
rcli HSET stepq:phase phase step-primary misses_at_since 4 >/dev/null
rcli HSET stepq:stats primary_misses 4 >/dev/null
sleep 2.1
expect "step-primary without new misses 200" is "$(req GET /health/redis-migration)" 200
rcli HSET stepq:stats primary_misses 6 >/dev/null
sleep 2.1
expect "misses in step-primary 503" is "$(req GET /health/redis-migration)" 503
expect "misses reason" json "j['reasons'][0].startswith('2 reads missed step:* keys since the move to step-primary') and \"'stepq migrate backfill', then 'stepq migrate verify'\" in j['reasons'][0]"
# Doing what the reason says clears it: a backfill and a clean verify.
expect "the advised backfill and verify run" sh -c "'$STEPQ' migrate backfill >/dev/null 2>&1 && '$STEPQ' migrate verify >/dev/null 2>&1"
sleep 2.1
expect "and clear the misses reason" is "$(req GET /health/redis-migration)" 200
# A rollback out of 'step' stopped between its two reconcile passes: the
# advised command finishes it, and moves no further.
rcli HSET stepq:phase reconciling 1 >/dev/null
sleep 2.1
expect "unfinished rollback 503" is "$(req GET /health/redis-migration)" 503
expect "unfinished rollback reason" json "j['reasons'] == [\"a rollback out of 'step' stopped before it finished reconciling the old keys (they miss what was written in 'step'); run 'stepq migrate rollback' to finish it\"]"
expect "the advised rollback runs" sh -c "'$STEPQ' migrate rollback | grep -q '^finished: '"
sleep 2.1
expect "and clears it, in the same phase" is "$(req GET /health/redis-migration)" 200
expect "still step-primary" is "$(rcli HGET stepq:phase phase)" step-primary
# In step-primary a verify that keeps finding differences: the advice (roll
# back to dual-read, then rollback --reconcile) is allowed at each step and
# clears it, with the old key made equal to the new one.
rcli HSET stepq:verify clean 0 different 1 missing 0 >/dev/null
rcli HSET step:G id G status completed >/dev/null
rcli HSET job:G id G status pending >/dev/null
sleep 2.1
expect "step-primary differences 503" is "$(req GET /health/redis-migration)" 503
expect "its reason names the rollback to dual-read, then --reconcile" json "j['reasons'][0].startswith('the last verify found differences') and \"'stepq migrate rollback' to 'dual-read', then 'stepq migrate rollback --reconcile'\" in j['reasons'][0]"
expect "the advised rollback runs" sh -c "'$STEPQ' migrate rollback >/dev/null"
expect "and reaches dual-read" is "$(rcli HGET stepq:phase phase)" dual-read
expect "the advised rollback --reconcile runs" sh -c "'$STEPQ' migrate rollback --reconcile >/dev/null"
expect "the old key now equals the new one" is "$(rcli HGET job:G status)" completed
sleep 2.1
expect "and health is clean, in dual-write" is "$(req GET /health/redis-migration):$(rcli HGET stepq:phase phase)" 200:dual-write
rcli DEL step:G job:G >/dev/null
rcli HSET stepq:phase phase step-primary >/dev/null
now=$(python3 -I -S -c 'import time; print(int(time.time()*1000))')
rcli HSET stepq:procs fake:1 "{\"id\":\"fake:1\",\"kind\":\"worker\",\"phase\":\"dual-write\",\"seen\":$now,\"ttl\":60000}" >/dev/null
sleep 2.1
expect "pinned process 503" is "$(req GET /health/redis-migration)" 503
expect "pinned reason" json "j['reasons'] == [\"process 'fake:1' (worker) is pinned to 'dual-write' but the stored phase is 'step-primary'; unset ENABLE_DUAL_WRITE_STEPS and PRIMARY_KEY_PATTERN there and restart it\"]"
expect "/health still 200 (Redis answers)" is "$(req GET /health)" 200
expect "/health shows the phase" json "j['phase'] == 'step-primary'"

# --- migration gauges -----------------------------------------------------------
expect "GET /metrics 200" is "$(req GET /metrics)" 200
m=$tmp/body
expect "phase gauge" grep -qx 'stepq_migration_phase{phase="step-primary"} 1' "$m"
expect "misses gauge" grep -qx 'stepq_migration_primary_misses_total 6' "$m"
expect "backfill gauges" grep -qx "stepq_backfill_keys_done $(rcli HGET stepq:backfill keys_done)" "$m"
expect "fallback and lazy" sh -c "grep -q '^stepq_migration_fallback_reads_total ' '$m' && grep -q '^stepq_migration_lazy_migrations_total ' '$m'"
expect "unhealthy gauge" grep -qx 'stepq_migration_healthy 0' "$m"
expect "redis up" grep -qx 'stepq_redis_up 1' "$m"
rcli DEL stepq:phase stepq:stats stepq:backfill stepq:verify >/dev/null
rcli HDEL stepq:procs fake:1 >/dev/null
expect "the server is announced" is "$(rcli HLEN stepq:procs)" 1
kill -TERM "$pid"
wait "$pid"
expect "serve exits 0 after SIGTERM" is $? 0
expect "the server withdrew from the live processes" is "$(rcli HLEN stepq:procs)" 0

# --- --no-auth, and Redis down --------------------------------------------------
unset STEPQ_API_TOKEN
start_server "$tmp/noauth.log" --no-auth
expect "--no-auth: POST without a token 201" is "$(req POST /steps -d '{}')" 201
kill -TERM "$pid"
wait "$pid"
start_server "$tmp/down.log" --no-auth -u "unix://$tmp/no-such.sock"
expect "serve starts while Redis is down" test -n "$port"
expect "/health 503 when Redis is down" is "$(req GET /health)" 503
expect "503 says redis is down" json "j['status'] == 'unavailable' and j['redis'] == 'down' and j['error']"
expect "migration health 503 when Redis is down" is "$(req GET /health/redis-migration)" 503
expect "metrics say redis down" sh -c "[ \"\$(curl -s '$url/metrics' | grep '^stepq_redis_up')\" = 'stepq_redis_up 0' ]"
kill -TERM "$pid"
wait "$pid"
expect "exit 0 after SIGTERM with Redis down" is $? 0

finish
