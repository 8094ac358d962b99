-- workers.lua @prelude
-- Lists registered workers.
-- Returns an array of {id, state, heartbeat, held step count, hash fields}.
local out = {}
for _, set in ipairs({{WORKERS_ACTIVE, 'active'}, {WORKERS_IDLE, 'idle'}}) do
    for _, w in ipairs(call('SMEMBERS', set[1])) do
        out[#out + 1] = {w, set[2], call('GET', wkey(w, ':heartbeat')) or '',
            call('SCARD', key('worker_steps', RSIDE, w)), call('HGETALL', wkey(w))}
    end
end
return out
