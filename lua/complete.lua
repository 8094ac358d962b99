-- complete.lua @prelude
-- Completes a held step: into the completed set, with the retention TTL on
-- the set, the step hash and its progress.
-- ARGV[3] id  ARGV[4] token  ARGV[5] result  ARGV[6] retention in ms
-- Returns 1. Errors: STEPQ_NOTFOUND, STEPQ_CONFLICT (token does not hold it).
local id, retention = ARGV[3], ARGV[6]
local _, w = held_step(id, ARGV[4])
hset('step', id, 'status', 'completed', 'result', ARGV[5], 'updated_at', NOW, 'finished_at', NOW)
coll('SREM', 'active', nil, id)
if w then
    coll('SREM', 'worker_steps', w, id)
end
coll('SADD', 'completed', nil, id)
coll('PEXPIRE', 'completed', nil, retention)
pexpire('step', id, retention)
pexpire('progress', id, retention)
emit({type = 'completed', step = id, worker = w})
worker_maybe_idle(w)
return 1
