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
-- Returns the steps claimed as a flat array of pairs: id, the key name of its
-- record (empty: none). The caller reads the records itself (src/queue.c):
-- an HGETALL in a script costs five times what it costs as a plain command,
-- its reply being turned into Lua and back (callgrind), and the record is
-- most of a claim's work. A record read after the claim shows its state then:
-- the caller keeps only steps still active with this token.
local worker, token = ARGV[3], ARGV[4]
local want, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local caps = {}
for c in string.gmatch(ARGV[5], '[^,]+') do
    caps[c] = true
end
local out, claimed = {}, 0 -- id, key pairs; how many steps

if ARGV[9] == '1' then
    for _, id in ipairs(call('SMEMBERS', key('worker_steps', RSIDE, worker))) do
        local side = locate('step', id)
        if side and try('HGET', key('step', side, id), 'token') == token then
            out[#out + 1] = id
            out[#out + 1] = key('step', side, id)
        end
    end
    if #out > 0 then
        return out
    end
end

-- Whether the capabilities cover `req`, a comma list (not empty).
local function eligible(req)
    for c in string.gmatch(req, '[^,]+') do
        if not caps[c] then
            return false
        end
    end
    return true
end

local ENDED = {active = true, completed = true, failed = true, cancelled = true}

local JWORKER = ',"worker":"' .. worker .. '"' -- checked by the caller

local pending, active = batch('ZREM', 'pending'), batch('SADD', 'active')
local held = batch('SADD', 'worker_steps', worker)

-- Tries to claim one pending member; the member leaves the pending zset
-- (claimed, or dropped as an orphan) at the next flush().
local function try_claim(id)
    -- Where this phase reads first: one HMGET answers most members; a
    -- record with none of the fields is looked for properly (fallback).
    local side, k = RSIDE, key('step', RSIDE, id)
    local v = try('HMGET', k, 'status', 'requires', 'attempts')
    if not v.err and not v[1] and not v[2] and not v[3] then
        side = locate('step', id)
        if side then
            k = key('step', side, id)
            v = try('HMGET', k, 'status', 'requires', 'attempts')
        end
    end
    if v.err or not side or (v[1] and ENDED[v[1]]) then
        -- The step's hash expired or was deleted, its key holds something
        -- else (damaged data), or the step ended: the member can never be
        -- claimed, so drop it rather than let it block the head of the
        -- queue.
        pending[#pending + 1] = id
        stat('orphans_dropped')
        return
    end
    local req = v[2]
    if req and req ~= '' and not eligible(req) then
        return
    end
    -- The other side becomes a copy of this one, so the attempts read here
    -- is the count on both.
    hset_at(k, side, 'step', id, nil, 'status', 'active', 'worker', worker, 'token', token,
        'claimed_at', NOW, 'updated_at', NOW, 'attempts', itoa((tonumber(v[3]) or 0) + 1))
    out[#out + 1] = id
    out[#out + 1] = k
    claimed = claimed + 1
    pending[#pending + 1] = id
    active[#active + 1] = id
    held[#held + 1] = id
    emit('claimed', id, false, JWORKER)
end

-- Walks one pending zset from the highest score down. Members stay in the
-- zset until the flush at the end, so pages follow each other by offset.
local function walk(pkey)
    local examined = 0
    local top = call('ZREVRANGE', pkey, 0, 0, 'WITHSCORES')
    local score = top[2]
    while score and claimed < want and examined < budget do
        local off = 0
        while claimed < want and examined < budget do
            local ids = call('ZRANGEBYSCORE', pkey, score, score, 'LIMIT', off, 64)
            if #ids == 0 then
                break
            end
            for _, id in ipairs(ids) do
                examined = examined + 1
                try_claim(id)
                if claimed >= want or examined >= budget then
                    break
                end
            end
            off = off + #ids
        end
        local nxt = call('ZREVRANGEBYSCORE', pkey, '(' .. score, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
        score = nxt[2]
    end
    flush()
end

walk(key('pending', RSIDE))
-- The old queue is a fallback read only when it served a step the new one
-- did not: an idle worker polling an empty (or unclaimable) queue is not
-- one, or the documented alert would fire on a healthy system.
if #out == 0 and FALLBACK and call('ZCARD', key('pending', 1)) > 0 then
    walk(key('pending', 1))
    if #out > 0 then
        stat('fallback_reads')
    end
end
if #out > 0 then
    call('SET', wkey(worker, ':heartbeat'), NOW, 'PX', ARGV[8])
    if call('SREM', WORKERS_IDLE, worker) == 1 or call('SISMEMBER', WORKERS_ACTIVE, worker) == 0 then
        call('SADD', WORKERS_ACTIVE, worker)
    end
end
return out
