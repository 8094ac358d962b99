-- complete.lua @prelude
-- Completes held steps: into the completed set, with the retention TTL on
-- the set, the step hash and its progress. One or many in a call.
-- ARGV[3] retention in ms
-- then per step, 3 arguments: id, token, result
-- Returns one entry per step: 1 when completed, else the error text
-- ('STEPQ_NOTFOUND ...' or 'STEPQ_CONFLICT ...'); a refused step does not
-- stop the others.
local retention = ARGV[3]
local out = {}
for i = 4, TPL - 2, 3 do
    local id = ARGV[i]
    local _, w, err = held_step(id, ARGV[i + 1], true)
    if err then
        out[#out + 1] = err
    else
        hset('step', id, 'status', 'completed', 'result', ARGV[i + 2], 'updated_at', NOW,
            'finished_at', NOW)
        coll('SREM', 'active', nil, id)
        if w then
            coll('SREM', 'worker_steps', w, id)
        end
        coll('SADD', 'completed', nil, id)
        pexpire('step', id, retention)
        pexpire('progress', id, retention)
        emit('completed', id, ',"worker":' .. js(w))
        worker_maybe_idle(w)
        out[#out + 1] = 1
    end
end
if #out > 0 then
    coll('PEXPIRE', 'completed', nil, retention)
end
return out
