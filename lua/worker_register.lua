-- worker_register.lua @prelude
-- Registers a worker: its hash of capabilities, idle, with a heartbeat.
-- A worker id is owned by one process at a time: the registration carries
-- that process's instance token (random, per process). Registering again
-- with the same token renews it (after a reap, say). Another token is
-- refused while the registration it would replace is alive (its heartbeat
-- not older than ARGV[5]); a dead one is taken over, and the steps its
-- process still held (record active, held by this id) go back to the queue
-- first: the reaper, seeing the id alive again, would never requeue them.
-- ARGV[3] worker  ARGV[4] capabilities (comma list)  ARGV[5] heartbeat ttl ms
-- ARGV[6] host  ARGV[7] pid  ARGV[8] instance token  ARGV[9] retention ms
-- Returns the number of the previous process's steps requeued (0 mostly).
-- Errors: STEPQ_CONFLICT when another live process holds the id.
local w, inst = ARGV[3], ARGV[8]
local requeued = 0
local cur = call('HMGET', wkey(w), 'instance', 'host', 'pid')
if cur[1] ~= inst and call('EXISTS', wkey(w)) == 1 then
    local hb = call('GET', wkey(w, ':heartbeat'))
    local t = tonumber(hb)
    if t and t < 100000000000 then
        t = t * 1000 -- the seed's layout: seconds
    end
    if hb and (t == nil or tonumber(NOW) - t <= tonumber(ARGV[5])) then
        raise('CONFLICT', "worker '" .. w .. "' is registered by a live process (host " ..
            tostring(cur[2] or '?') .. ', pid ' .. tostring(cur[3] or '?') ..
            '); pick another --id, or stop that process first')
    end
    for _, id in ipairs(call('SMEMBERS', key('worker_steps', RSIDE, w))) do
        local side = locate('step', id)
        local v = side and try('HMGET', key('step', side, id), 'status', 'worker')
        if v and not v.err and v[1] == 'active' and (v[2] == w or not v[2] or v[2] == '') then
            retry_or_fail(id, side, w, 'requeued', 'worker ' .. w .. ' lost (another process took its id)',
                ARGV[9])
            requeued = requeued + 1
        end
    end
end
call('HSET', wkey(w), 'id', w, 'capabilities', ARGV[4], 'host', ARGV[6], 'pid', ARGV[7],
    'instance', inst, 'registered_at', NOW)
call('SET', wkey(w, ':heartbeat'), NOW, 'PX', ARGV[5])
if call('SISMEMBER', WORKERS_ACTIVE, w) == 0 then
    call('SADD', WORKERS_IDLE, w)
end
worker_event({type = 'registered', worker = w, capabilities = ARGV[4]})
return requeued
