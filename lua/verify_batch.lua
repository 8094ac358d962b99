-- verify_batch.lua
-- Compares keys with their twins (the verify; docs/migration-engine.md). Per
-- pair, atomically, so that a concurrent write cannot fake a difference:
-- type, content as an order-independent digest, and the absolute expiry.
-- A digest is 'type:count:sha', sha the first 64 bits of the SHA1 of the
-- key's elements in their canonical form (a hash field and its value, a set
-- member, a zset member and its score, a list index and its value, a
-- string's value), each prefixed with its length, sorted and joined: equal
-- content, equal digest, whatever the order Redis keeps it in.
-- The fast path, for pairs the map says are strings or lists: when the DUMP
-- payloads of the two keys are byte-identical (what COPY
-- makes), type and content are equal, and both digests are 'dump:crc', the
-- CRC64 the payload ends with. A redis.call() is most of this script's cost,
-- and an equal pair costs four (two DUMP, two PEXPIRETIME) instead of six
-- plus the element tables; only a pair whose payloads differ is read element
-- by element, and then both of its digests are canonical: the digests of a
-- pair agree exactly when the contents do. A key of another type than
-- these five (a stream, a module's type) is compared by its DUMP payload,
-- and its digest is 'dump:crc'.
-- KEYS pairs: the key verified (old, or new with --reverse), then its twin
-- ARGV[1] largest collection compared here (members)  ARGV[2] TTL tolerance ms
-- ARGV[3] the map's type of each pair, one letter each (h s z l t); optional;
-- S and Z: a set or zset of a fixed name (a queue collection), for which an
-- absent key is an empty one: the key verified absent and its twin holding
-- members is 'different' (a stale collection would hide behind an old twin
-- that emptied, docs/model.md F3), not 'gone'
-- Reply per pair: {verdict, digest of the first, digest of the twin} with
-- verdict 'equal', 'missing' (twin absent), 'different' (type or content),
-- 'ttl' (expiry off by more than the tolerance), 'gone' (the key itself is
-- absent: nothing to verify) or 'big' (two sets or two zsets, one of them
-- above ARGV[1] members, that the caller compares in chunks with
-- verify_members; the reply is then {'big', 'set' or 'zset', ''}). A key
-- above ARGV[1] members is never read whole: in another verdict its digest
-- is 'type:size:big'.
local limit, tol = tonumber(ARGV[1]), tonumber(ARGV[2])
-- The types compared element by element; any other by its DUMP payload.
local ELEMENTS = {hash = true, set = true, zset = true, list = true, string = true}

-- A whole number as text, remembered: a number in a concatenation is a
-- sprintf of a double (about 2,000 instructions), and the lengths that
-- prefix a digest's elements repeat from key to key.
local NUM = {}
local function n2s(n)
    local s = NUM[n]
    if not s then
        s = tostring(n)
        NUM[n] = s
    end
    return s
end

local HEX8 = string.rep('%02x', 8)

-- 'dump:crc' (the CRC64 a DUMP payload ends with) and the payload.
local function dump_digest(k)
    local p = redis.call('DUMP', k)
    return 'dump:' .. string.format(HEX8, string.byte(p, -8, -1)), p
end

-- The digest of a key of type t from its flat elements v (as fetch gives
-- them; fetched here when nil).
local function digest(k, t, v)
    local els = {}
    if t == 'hash' or t == 'zset' then
        v = v or (t == 'hash' and redis.call('HGETALL', k) or
            redis.call('ZRANGE', k, 0, -1, 'WITHSCORES'))
        for i = 1, #v, 2 do
            local f, x = v[i], v[i + 1]
            els[#els + 1] = n2s(#f + #x + #n2s(#f) + 1) .. ':' .. n2s(#f) .. ':' .. f .. x
        end
    elseif t == 'set' then
        v = v or redis.call('SMEMBERS', k)
        for i = 1, #v do
            els[i] = n2s(#v[i]) .. ':' .. v[i]
        end
    elseif t == 'list' then
        v = v or redis.call('LRANGE', k, 0, -1)
        for i = 1, #v do
            local x = v[i]
            els[i] = n2s(#x + #n2s(i) + 1) .. ':' .. n2s(i) .. ':' .. x
        end
    elseif t == 'string' then
        v = v or {redis.call('GET', k)}
        els[1] = n2s(#v[1]) .. ':' .. v[1]
    else
        -- A type read here element by element only when it is one of the
        -- map's; any other (a stream, a module's type) by its DUMP payload.
        return (dump_digest(k))
    end
    table.sort(els)
    return t .. ':' .. n2s(#els) .. ':' .. string.sub(redis.sha1hex(table.concat(els)), 1, 16)
end

local function fast(a, b)
    local pa = redis.call('DUMP', a)
    if not pa or pa ~= redis.call('DUMP', b) then
        return nil
    end
    return 'dump:' .. string.format(HEX8, string.byte(pa, -8, -1))
end

local function size(k, t)
    if t == 'set' then
        return redis.call('SCARD', k)
    elseif t == 'zset' then
        return redis.call('ZCARD', k)
    end
    return 0
end

-- The digest of a key of type t and size n (set and zset: members, else 0):
-- a collection above the limit is never read whole here (one script would
-- hold Redis for its size); its digest is then 'type:size:big'.
local function digest_sized(k, t, n)
    if n > limit then
        return t .. ':' .. n2s(n) .. ':big'
    end
    return digest(k, t)
end

local function ttl_off(a, b)
    local ea, eb = redis.call('PEXPIRETIME', a), redis.call('PEXPIRETIME', b)
    if (ea == -1) ~= (eb == -1) then
        return true
    end
    return ea > 0 and math.abs(ea - eb) > tol
end

-- Any pair: by type and the canonical digests.
-- The elements of a key as a flat reply: field/value, member, member/score.
local function fetch(k, t)
    if t == 'hash' then
        return redis.call('HGETALL', k), 2
    elseif t == 'set' then
        return redis.call('SMEMBERS', k), 1
    elseif t == 'zset' then
        return redis.call('ZRANGE', k, 0, -1, 'WITHSCORES'), 2
    elseif t == 'list' then
        return redis.call('LRANGE', k, 0, -1), 0
    elseif t == 'string' then
        return {redis.call('GET', k)}, 0
    end
    return {}, 0
end

-- Same content? Hash fields, set members and zset members are compared
-- through a table, whatever order Redis returns them in; lists and strings
-- element by element.
local function same(va, vb, step)
    if #va ~= #vb then
        return false
    end
    if step == 0 then
        for i = 1, #va do
            if va[i] ~= vb[i] then
                return false
            end
        end
        return true
    end
    local m = {}
    for i = 1, #va, step do
        m[va[i]] = step == 2 and va[i + 1] or true
    end
    for i = 1, #vb, step do
        if m[vb[i]] ~= (step == 2 and vb[i + 1] or true) then
            return false
        end
    end
    return true
end

local function slow(a, b, whole)
    local ta, tb = redis.call('TYPE', a).ok, redis.call('TYPE', b).ok
    local na, nb = size(a, ta), size(b, tb)
    if ta == 'none' and whole and tb ~= 'none' then
        return {'different', 'none', digest_sized(b, tb, nb)}
    elseif ta == 'none' then
        return {'gone', '', tb == 'none' and '' or digest_sized(b, tb, nb)}
    elseif tb == 'none' then
        return {'missing', digest_sized(a, ta, na), ''}
    elseif ta ~= tb then
        -- A type mismatch is a difference, whatever the sizes: a big key is
        -- not compared member by member with a twin of another type.
        return {'different', digest_sized(a, ta, na), digest_sized(b, tb, nb)}
    elseif na > limit or nb > limit then
        return {'big', ta, ''}
    end
    if not ELEMENTS[ta] then
        local da, pa = dump_digest(a)
        local db, pb = dump_digest(b)
        if pa == pb then
            return {ttl_off(a, b) and 'ttl' or 'equal', da, da}
        end
        return {'different', da, db}
    end
    -- Equal content has one digest: compute it once, from the first key.
    if ta == tb then
        local va, step = fetch(a, ta)
        local vb = fetch(b, tb)
        if same(va, vb, step) then
            local d = digest(a, ta, va)
            return {ttl_off(a, b) and 'ttl' or 'equal', d, d}
        end
    end
    return {'different', digest(a, ta), digest(b, tb)}
end

-- Pairs the map says are hashes: both read at once, without TYPE; an empty
-- or missing or other-typed key, or a difference, goes the slow way.
local function hash_pair(a, b)
    local va = redis.pcall('HGETALL', a)
    if va.err or #va == 0 then
        return nil
    end
    local vb = redis.pcall('HGETALL', b)
    if vb.err or #vb == 0 or not same(va, vb, 2) then
        return nil
    end
    local d = digest(a, 'hash', va)
    return {ttl_off(a, b) and 'ttl' or 'equal', d, d}
end

local out = {}
local types = ARGV[3] or ''
for i = 1, #KEYS, 2 do
    local a, b = KEYS[i], KEYS[i + 1]
    local want = string.sub(types, (i + 1) / 2, (i + 1) / 2)
    -- Hashes are not tried: COPY keeps a hashtable-encoded hash's content but
    -- not its order, so their DUMP payloads differ and the try was wasted.
    local d = (want == 't' or want == 'l') and fast(a, b)
    if d then
        out[#out + 1] = {ttl_off(a, b) and 'ttl' or 'equal', d, d}
    else
        out[#out + 1] = (want == 'h' and hash_pair(a, b)) or slow(a, b, want == 'S' or want == 'Z')
    end
end
return out
