-- reap.lua @prelude
-- Requeues the steps held by dead workers and removes those workers. A worker
-- is dead when its heartbeat key is gone or holds a time older than the
-- timeout (the seed's layout stores a timestamp; seconds or milliseconds).
-- With ARGV[4] set, only that worker is released, dead or not (deregister),
-- and only by the process whose registration it is (ARGV[6], its instance
-- token): a worker never releases another process's registration.
--
-- Records are the truth, the sets are indexes (design.md, invariant 7). A
-- step of the active set or of a worker's set is requeued only when its
-- record says `active`, held by a dead worker: the one in its `worker`
-- field, or for a record of the old system without one, the worker whose
-- set holds it. Any other member (its record gone, the step ended or pending
-- again, or held by another worker than the set's) is a stale entry: it is
-- removed from that set on the sides this phase writes, never requeued, and
-- the step is counted once in stats.stale_dropped. A key that is not a step
-- record (damaged data) is passed over.
-- ARGV[3] timeout ms  ARGV[4] worker to release, or ''  ARGV[5] retention ms
-- ARGV[6] with ARGV[4]: the releasing process's instance token
-- Returns {steps requeued or failed, workers removed, stale steps dropped}.
-- Errors: STEPQ_CONFLICT when ARGV[4] is registered by another process
-- (nothing was done).
local timeout, only, retention = tonumber(ARGV[3]), ARGV[4], ARGV[5]
local alive_cache = {}

if only ~= '' and call('EXISTS', wkey(only)) == 1 then
    local cur = call('HMGET', wkey(only), 'instance', 'host', 'pid')
    if cur[1] ~= ARGV[6] then
        raise('CONFLICT', "worker '" .. only .. "' is registered by another process now (host " ..
            tostring(cur[2] or '?') .. ', pid ' .. tostring(cur[3] or '?') ..
            '); left it and its steps alone')
    end
end

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

-- Every step an index names: the active set's members, then those of each
-- registered worker's set, with the sets that hold each.
local workers = call('SUNION', WORKERS_ACTIVE, WORKERS_IDLE)
local ids, sets = {}, {} -- ids in order; id -> {in_active, worker, worker...}
local function index(id, holder)
    local s = sets[id]
    if not s then
        s = {false}
        sets[id] = s
        ids[#ids + 1] = id
    end
    if holder then
        s[#s + 1] = holder
    else
        s[1] = true
    end
end
for _, id in ipairs(call('SMEMBERS', key('active', RSIDE))) do
    index(id)
end
for _, w in ipairs(workers) do
    for _, id in ipairs(call('SMEMBERS', key('worker_steps', RSIDE, w))) do
        index(id, w)
    end
end

local requeued, stale = 0, 0
for _, id in ipairs(ids) do
    local s = sets[id]
    local side = locate('step', id)
    local v = side and try('HMGET', key('step', side, id), 'status', 'worker')
    if not (v and v.err) then
        -- An active record with no holder to be found stays as it is:
        -- dropping it would leave the step in no index at all.
        local active, holder = v and v[1] == 'active', nil
        if active then
            holder = (v[2] and v[2] ~= '') and v[2] or s[2]
        end
        local dropped = false
        if not active and s[1] then
            coll('SREM', 'active', nil, id)
            dropped = true
        end
        for i = 2, #s do
            if not active or s[i] ~= holder then
                coll('SREM', 'worker_steps', s[i], id)
                dropped = true
            end
        end
        if dropped then
            stale = stale + 1
        end
        if holder and not alive(holder) then
            retry_or_fail(id, side, holder, 'requeued', 'worker ' .. holder .. ' lost', retention)
            requeued = requeued + 1
        end
    end
end
if stale > 0 then
    call('HINCRBY', STATS_KEY, 'stale_dropped', stale)
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
return {requeued, removed, stale}
