-- cancel.lua @prelude
-- Cancels a pending or active step. A worker still running it finds out at
-- its next progress or complete (its token no longer holds the step).
-- ARGV[3] id  ARGV[4] retention in ms
-- Returns the status the step had. Errors: STEPQ_NOTFOUND, STEPQ_CONFLICT
-- (the step already ended).
local id, retention = ARGV[3], ARGV[4]
local side = locate('step', id)
if not side then
    raise('NOTFOUND', "step '" .. id .. "' does not exist")
end
local k = key('step', side, id)
local v = call('HMGET', k, 'status', 'worker')
local st, w = v[1] or 'pending', v[2]
if st == 'completed' or st == 'failed' or st == 'cancelled' then
    raise('CONFLICT', "step '" .. id .. "' already ended (status " .. st .. ')')
end
hset_at(k, side, 'step', id, retention, 'status', 'cancelled', 'updated_at', NOW, 'finished_at', NOW)
coll('ZREM', 'pending', nil, id)
coll('SREM', 'active', nil, id)
if st == 'active' and w then
    coll('SREM', 'worker_steps', w, id)
end
pexpire_progress(id, retention)
emit('cancelled', id, true, ',"was":', js(st))
if st == 'active' then
    worker_maybe_idle(w)
end
return st
