-- complete.lua @prelude
-- Completes held steps: into the completed set, with the retention TTL on
-- the step hash and its progress. The set gets no TTL: renewed at every
-- completion it would never expire, and ids whose record expired would stay
-- listed; the reaper's prune.lua drops those. One or many in a call.
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
    local side, w, k = held_step(id, ARGV[i + 1], true)
    if not side then
        out[#out + 1] = k -- the error text
    else
        hset_at(k, side, 'step', id, retention, 'status', 'completed', 'result', ARGV[i + 2],
            'updated_at', NOW, 'finished_at', NOW)
        active[#active + 1] = id
        completed[#completed + 1] = id
        if w then
            local m = held[w]
            if not m then
                workers[#workers + 1] = w
                m = batch('SREM', 'worker_steps', w)
                held[w] = m
                jworker[w] = ',"worker":' .. js(w)
            end
            m[#m + 1] = id
        end
        pexpire_progress(id, retention)
        emit('completed', id, true, jworker[w] or ',"worker":null')
        out[#out + 1] = 1
    end
end
flush()
for _, w in ipairs(workers) do
    worker_maybe_idle(w)
end
return out
