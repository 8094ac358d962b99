#!/usr/bin/env bash
# `stepq events --follow` subscribes to the channels of the current phase,
# follows the phase through a walk to step without missing an event, and
# prints each event once in the dual phases (published on both channels).
. "$(dirname "$0")/lib.sh"

own_channels t43 "$TMP/rules"

# How many channels the follower of this database is subscribed to.
subs() { rcli CLIENT LIST | awk -v db="db=$STEPQ_DB" '/name=stepq-events/ && $0 ~ " " db " " {for (i = 1; i <= NF; i++) if ($i ~ /^sub=/) print substr($i, 5)}'; }
follow() { $S events --follow >"$TMP/$1.out" 2>"$TMP/$1.log" & FPID=$!; PIDS+=("$FPID"); }
stop_follow() { kill "$FPID" 2>/dev/null; wait "$FPID" 2>/dev/null || true; }
count() { grep -c "\"step\":\"$2\"" "$TMP/$1.out" || true; }
has() { [ "$(count "$1" "$2")" -ge 1 ]; }
sub_is() { [ "$(subs)" = "$1" ]; }

follow job
expect "phase job: job_events and worker_events" wait_for 5 sub_is 2
a=$($S submit)
expect "phase job: the event arrives" wait_for 5 has job "$a"
stop_follow

rcli HSET stepq:phase phase dual-write >/dev/null
follow dual
expect "phase dual-write: both channels and worker_events" wait_for 5 sub_is 3
b=$($S submit)
expect "phase dual-write: the event arrives" wait_for 5 has dual "$b"
sleep 0.3
expect "phase dual-write: once, though published twice" eq "$(count dual "$b")" 1
# Event ids count per database, channels are shared by all: two different
# events with one id are both printed; one event on both channels once.
rcli PUBLISH t43_job_events '{"id":"999999","step":"other-db-1"}' >/dev/null
rcli PUBLISH t43_step_events '{"id":"999999","step":"other-db-2"}' >/dev/null
rcli PUBLISH t43_job_events '{"id":"999999","step":"other-db-2"}' >/dev/null
expect "same id, other database: printed" wait_for 5 has dual other-db-2
expect "same id, other event: both printed, the twin once" \
    eq "$(count dual other-db-1)/$(count dual other-db-2)" 1/1
stop_follow

rcli HSET stepq:phase phase step >/dev/null
follow step
expect "phase step: step_events and worker_events" wait_for 5 sub_is 2
stop_follow

# A walk from job to step while following.
rcli HSET stepq:phase phase job >/dev/null
follow walk
wait_for 5 sub_is 2 || true
for p in dual-write dual-read step-primary step; do
    $S migrate phase --force --reason "events test: channels only" "$p" >/dev/null
    id=$($S submit)
    expect "walk: the event of phase $p arrives once" wait_for 5 has walk "$id"
    sleep 0.2
    expect "walk: and only once in phase $p" eq "$(count walk "$id")" 1
done
expect "walk: subscribed to both channels by then" sub_is 3
stop_follow
finish
