-- verify_batch.lua
-- Compares keys with their twins (the verify; docs/migration-engine.md). Per
-- pair, atomically, so that a concurrent write cannot fake a difference:
-- type, content as an order-independent digest, and the absolute expiry.
-- A digest is 'type:count:lanes', the lanes two sums (mod 2^32) of the
-- first 64 bits of the SHA1 of each element's canonical form (a hash field
-- and its value, a set member, a zset member and its score, a list index
-- and its value, a string's value): equal content, equal digest, whatever
-- the order Redis keeps it in.
-- KEYS pairs: the key verified (old, or new with --reverse), then its twin
-- ARGV[1] largest collection compared here (members)  ARGV[2] TTL tolerance ms
-- Reply per pair: {verdict, digest of the first, digest of the twin} with
-- verdict 'equal', 'missing' (twin absent), 'different' (type or content),
-- 'ttl' (expiry off by more than the tolerance), 'gone' (the key itself is
-- absent: nothing to verify) or 'big' (a set or zset the caller compares in
-- chunks with verify_members).
local limit, tol = tonumber(ARGV[1]), tonumber(ARGV[2])

local function digest(k, t)
    local els = {}
    if t == 'hash' then
        local v = redis.call('HGETALL', k)
        for i = 1, #v, 2 do
            els[#els + 1] = #v[i] .. ':' .. v[i] .. v[i + 1]
        end
    elseif t == 'set' then
        els = redis.call('SMEMBERS', k)
    elseif t == 'zset' then
        local v = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
        for i = 1, #v, 2 do
            els[#els + 1] = #v[i] .. ':' .. v[i] .. v[i + 1]
        end
    elseif t == 'list' then
        local v = redis.call('LRANGE', k, 0, -1)
        for i = 1, #v do
            els[#els + 1] = i .. ':' .. v[i]
        end
    elseif t == 'string' then
        els = {redis.call('GET', k)}
    else
        return t .. ':0:-'
    end
    local s1, s2 = 0, 0
    for _, e in ipairs(els) do
        local h = redis.sha1hex(e)
        s1 = (s1 + tonumber(string.sub(h, 1, 8), 16)) % 4294967296
        s2 = (s2 + tonumber(string.sub(h, 9, 16), 16)) % 4294967296
    end
    return string.format('%s:%d:%08x%08x', t, #els, s1, s2)
end

local function size(k, t)
    if t == 'set' then
        return redis.call('SCARD', k)
    elseif t == 'zset' then
        return redis.call('ZCARD', k)
    end
    return 0
end

local function ttl_off(a, b)
    local ea, eb = redis.call('PEXPIRETIME', a), redis.call('PEXPIRETIME', b)
    if (ea == -1) ~= (eb == -1) then
        return true
    end
    return ea > 0 and math.abs(ea - eb) > tol
end

local out = {}
for i = 1, #KEYS, 2 do
    local a, b = KEYS[i], KEYS[i + 1]
    local ta, tb = redis.call('TYPE', a).ok, redis.call('TYPE', b).ok
    if ta == 'none' then
        out[#out + 1] = {'gone', '', tb == 'none' and '' or digest(b, tb)}
    elseif tb == 'none' then
        out[#out + 1] = {'missing', digest(a, ta), ''}
    elseif size(a, ta) > limit or size(b, tb) > limit then
        out[#out + 1] = {'big', '', ''}
    else
        local da, db = digest(a, ta), digest(b, tb)
        local v = 'equal'
        if da ~= db then
            v = 'different'
        elseif ttl_off(a, b) then
            v = 'ttl'
        end
        out[#out + 1] = {v, da, db}
    end
end
return out
