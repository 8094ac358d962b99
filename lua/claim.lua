-- claim.lua @prelude
-- Claims up to ARGV[6] pending steps for a worker: highest priority first,
-- first in first out within a priority (ids are time-ordered and equal
-- scores sort by member), only steps whose `requires` are all in the
-- worker's capabilities.
-- ARGV[3] worker  ARGV[4] claim token  ARGV[5] capabilities (comma list)
-- ARGV[6] how many  ARGV[7] how many candidates to examine at most
-- ARGV[8] heartbeat ttl in ms (a claim is a sign of life)
-- ARGV[9] '1' when retrying after a lost reply: return the steps already
--         claimed with this token instead of claiming more
-- Returns an array of steps, each a flat field/value array (empty: none).
local worker, token = ARGV[3], ARGV[4]
local want, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local caps = {}
for c in string.gmatch(ARGV[5], '[^,]+') do
    caps[c] = true
end
local out = {}

if ARGV[9] == '1' then
    for _, id in ipairs(redis.call('SMEMBERS', key('worker_steps', RSIDE, worker))) do
        local side = locate('step', id)
        if side and redis.call('HGET', key('step', side, id), 'token') == token then
            out[#out + 1] = redis.call('HGETALL', key('step', side, id))
        end
    end
    if #out > 0 then
        return out
    end
end

local function eligible(req)
    if not req or req == '' then
        return true
    end
    for c in string.gmatch(req, '[^,]+') do
        if not caps[c] then
            return false
        end
    end
    return true
end

local ENDED = {active = true, completed = true, failed = true, cancelled = true}

local JWORKER = ',"worker":"' .. worker .. '"' -- checked by the caller

-- The claim's own fields, written to the step and patched into the record
-- returned (so the record is read once, not read again after the write).
local SETS = {'status', 'worker', 'token', 'claimed_at', 'updated_at', 'attempts'}
local FIELDS = {requires = true}
for _, f in ipairs(SETS) do
    FIELDS[f] = true
end
local pending, active = batch('ZREM', 'pending'), batch('SADD', 'active')
local held = batch('SADD', 'worker_steps', worker)

-- Tries to claim one pending member; the member leaves the pending zset
-- (claimed, or dropped as an orphan) at the next flush().
local function try_claim(id)
    -- Where this phase reads first: one HGETALL answers most members; a
    -- missing record is looked for properly (fallback).
    local side = RSIDE
    local h = redis.call('HGETALL', key('step', side, id))
    if #h == 0 then
        side = locate('step', id)
        if side then
            h = redis.call('HGETALL', key('step', side, id))
        end
    end
    -- Where each field's value is (a scan: cheaper than a table of them).
    local at = {}
    for j = 1, #h, 2 do
        local f = h[j]
        if FIELDS[f] then
            at[f] = j + 1
        end
    end
    local status = h[at.status or 0]
    if not side or (status and ENDED[status]) then
        -- The step's hash expired or was deleted, or the step ended: the
        -- member can never be claimed, so drop it rather than let it block
        -- the head of the queue.
        push(pending, id)
        stat('orphans_dropped')
        return
    end
    if not eligible(h[at.requires or 0]) then
        return
    end
    -- twin() has made both sides whole and equal, so the attempts read on
    -- one side is the count on both.
    local vals = {'active', worker, token, NOW, NOW, tostring((tonumber(h[at.attempts or 0]) or 0) + 1)}
    hset('step', id, SETS[1], vals[1], SETS[2], vals[2], SETS[3], vals[3], SETS[4], vals[4],
        SETS[5], vals[5], SETS[6], vals[6])
    for j = 1, #SETS do
        local f = SETS[j]
        if at[f] then
            h[at[f]] = vals[j]
        else
            h[#h + 1] = f
            h[#h + 1] = vals[j]
        end
    end
    out[#out + 1] = h
    push(pending, id)
    push(active, id)
    push(held, id)
    emit('claimed', js(id), JWORKER)
end

-- Walks one pending zset from the highest score down. Members stay in the
-- zset until the flush at the end, so pages follow each other by offset.
local function walk(pkey)
    local examined = 0
    local top = redis.call('ZREVRANGE', pkey, 0, 0, 'WITHSCORES')
    local score = top[2]
    while score and #out < want and examined < budget do
        local off = 0
        while #out < want and examined < budget do
            local ids = redis.call('ZRANGEBYSCORE', pkey, score, score, 'LIMIT', off, 64)
            if #ids == 0 then
                break
            end
            for _, id in ipairs(ids) do
                examined = examined + 1
                try_claim(id)
                if #out >= want or examined >= budget then
                    break
                end
            end
            off = off + #ids
        end
        local nxt = redis.call('ZREVRANGEBYSCORE', pkey, '(' .. score, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
        score = nxt[2]
    end
    flush()
end

walk(key('pending', RSIDE))
if #out == 0 and FALLBACK and redis.call('ZCARD', key('pending', 1)) > 0 then
    stat('fallback_reads')
    walk(key('pending', 1))
end
if #out > 0 then
    redis.call('SET', wkey(worker, ':heartbeat'), NOW, 'PX', ARGV[8])
    if redis.call('SREM', WORKERS_IDLE, worker) == 1 or redis.call('SISMEMBER', WORKERS_ACTIVE, worker) == 0 then
        redis.call('SADD', WORKERS_ACTIVE, worker)
    end
end
return out
