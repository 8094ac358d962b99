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
local active, completed = batch('SREM', 'active'), batch('SADD', 'completed')
local workers, held, jworker = {}, {}, {} -- per worker of a step completed: its steps, its JSON
for i = 4, TPL - 2, 3 do
    local id = ARGV[i]
    local side, w, err = held_step(id, ARGV[i + 1], true)
    if err then
        out[#out + 1] = err
    else
        hset_at(side, 'step', id, 'status', 'completed', 'result', ARGV[i + 2], 'updated_at', NOW,
            'finished_at', NOW)
        push(active, id)
        push(completed, id)
        if w then
            if not held[w] then
                workers[#workers + 1] = w
                held[w] = batch('SREM', 'worker_steps', w)
                jworker[w] = ',"worker":' .. js(w)
            end
            push(held[w], id)
        end
        pexpire('step', id, retention)
        pexpire_progress(id, retention)
        emit('completed', '"' .. id .. '"', jworker[w] or ',"worker":null')
        out[#out + 1] = 1
    end
end
flush()
for _, w in ipairs(workers) do
    worker_maybe_idle(w)
end
if #out > 0 then
    coll('PEXPIRE', 'completed', nil, retention)
end
return out
