# tests/own_channels.sh - sourced by shell tests that count events.
# own_channels PREFIX FILE: writes to FILE the default key map with event
# channels of the test's own (PREFIX_job_events, PREFIX_step_events;
# docs/keymap.md) and exports STEPQ_RULES=FILE. Channels are shared by every
# database of the server, and other tests publish on job_events and
# step_events at the same time: so only the test's own events count.
own_channels() {
    cat >"$2" <<RULES
step          hash     job:{id}            step:{id}
progress      hash     job:{id}:progress   step:{id}:progress
pending       zset     jobs:pending        steps:pending
active        set      jobs:active         steps:active
completed     set      jobs:completed      steps:completed
failed        set      jobs:failed         steps:failed
worker_steps  set      worker:{id}:jobs    worker:{id}:steps
events        channel  ${1}_job_events     ${1}_step_events
RULES
    export STEPQ_RULES=$2
}
