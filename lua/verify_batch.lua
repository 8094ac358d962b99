-- verify_batch.lua
-- Compares keys with their twins (the verify; docs/migration-engine.md). Per
-- pair, atomically, so that a concurrent write cannot fake a difference:
-- type, content as an order-independent digest, and the absolute expiry.
-- A digest is 'type:count:sha', sha the first 64 bits of the SHA1 of the
-- key's elements in their canonical form (a hash field and its value, a set
-- member, a zset member and its score, a list index and its value, a
-- string's value), each prefixed with its length, sorted and joined: equal
-- content, equal digest, whatever the order Redis keeps it in.
-- The fast path, for pairs the map says are not sets or zsets (those may be
-- big): when the DUMP payloads of the two keys are byte-identical (what COPY
-- makes), type and content are equal, and both digests are 'dump:crc', the
-- CRC64 the payload ends with. A redis.call() is most of this script's cost,
-- and an equal pair costs four (two DUMP, two PEXPIRETIME) instead of six
-- plus the element tables; only a pair whose payloads differ is read element
-- by element, and then both of its digests are canonical: the digests of a
-- pair agree exactly when the contents do.
-- KEYS pairs: the key verified (old, or new with --reverse), then its twin
-- ARGV[1] largest collection compared here (members)  ARGV[2] TTL tolerance ms
-- ARGV[3] the map's type of each pair, one letter each (h s z l t); optional
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
    -- Length-prefixed, so that no two element lists join to the same text.
    for i = 1, #els do
        els[i] = #els[i] .. ':' .. els[i]
    end
    table.sort(els)
    return t .. ':' .. #els .. ':' .. string.sub(redis.sha1hex(table.concat(els)), 1, 16)
end

-- Both digests from the DUMP payloads when both keys exist and their
-- payloads are identical, else nil.
local function fast(a, b)
    local pa = redis.call('DUMP', a)
    if not pa or pa ~= redis.call('DUMP', b) then
        return nil
    end
    return 'dump:' .. string.format(string.rep('%02x', 8), string.byte(pa, -8, -1))
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

-- Any pair: by type and the canonical digests.
local function slow(a, b)
    local ta, tb = redis.call('TYPE', a).ok, redis.call('TYPE', b).ok
    if ta == 'none' then
        return {'gone', '', tb == 'none' and '' or digest(b, tb)}
    elseif tb == 'none' then
        return {'missing', digest(a, ta), ''}
    elseif size(a, ta) > limit or size(b, tb) > limit then
        return {'big', '', ''}
    end
    local da, db = digest(a, ta), digest(b, tb)
    local v = 'equal'
    if da ~= db then
        v = 'different'
    elseif ttl_off(a, b) then
        v = 'ttl'
    end
    return {v, da, db}
end

local out = {}
local types = ARGV[3] or ''
for i = 1, #KEYS, 2 do
    local a, b = KEYS[i], KEYS[i + 1]
    local want = string.sub(types, (i + 1) / 2, (i + 1) / 2)
    local d = (want == 'h' or want == 't' or want == 'l') and fast(a, b)
    if d then
        out[#out + 1] = {ttl_off(a, b) and 'ttl' or 'equal', d, d}
    else
        out[#out + 1] = slow(a, b)
    end
end
return out
