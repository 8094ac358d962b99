-- reap.lua @prelude
-- Requeues the steps held by dead workers and removes those workers. A worker
-- is dead when its heartbeat key is gone or holds a time older than the
-- timeout (the seed's layout stores a timestamp; seconds or milliseconds).
-- With ARGV[4] set, only that worker is released, dead or not (deregister).
-- ARGV[3] timeout ms  ARGV[4] worker to release, or ''  ARGV[5] retention ms
-- Returns {steps requeued or failed, workers removed}.
local timeout, only, retention = tonumber(ARGV[3]), ARGV[4], ARGV[5]
local alive_cache = {}

local function alive(w)
    if only ~= '' then
        return w ~= only
    end
    if alive_cache[w] == nil then
        local v = call('GET', wkey(w, ':heartbeat'))
        local ok = false
        if v then
            local t = tonumber(v)
            if t and t < 100000000000 then
                t = t * 1000
            end
            ok = (t == nil) or (tonumber(NOW) - t <= timeout)
        end
        alive_cache[w] = ok
    end
    return alive_cache[w]
end

-- Who holds each active step: its `worker` field, else (for records of the
-- old system without one) the worker set it is in.
local workers = call('SUNION', WORKERS_ACTIVE, WORKERS_IDLE)
local owner = {}
for _, w in ipairs(workers) do
    for _, id in ipairs(call('SMEMBERS', key('worker_steps', RSIDE, w))) do
        owner[id] = w
    end
end

local requeued = 0
for _, id in ipairs(call('SMEMBERS', key('active', RSIDE))) do
    local side = locate('step', id)
    if side then
        -- A key that is not a step record (damaged data) has nothing to
        -- requeue; raising would stop the reaping of every step after it.
        local w = try('HGET', key('step', side, id), 'worker')
        if type(w) == 'table' then
            w = nil
        else
            w = w or owner[id]
        end
        if w and not alive(w) then
            retry_or_fail(id, side, w, 'requeued', 'worker ' .. w .. ' lost', retention)
            requeued = requeued + 1
        end
    end
end

local removed = 0
for _, w in ipairs(workers) do
    if not alive(w) then
        -- Steps left in its set are no longer active: nothing to requeue.
        call('DEL', wkey(w), wkey(w, ':heartbeat'))
        coll('DEL', 'worker_steps', w)
        call('SREM', WORKERS_ACTIVE, w)
        call('SREM', WORKERS_IDLE, w)
        worker_event({type = only ~= '' and 'deregistered' or 'reaped', worker = w})
        removed = removed + 1
    end
end
return {requeued, removed}
