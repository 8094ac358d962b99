-- backfill_batch.lua @part backfill_guard
-- Copies one batch of keys from their old names to their new ones (the
-- backfill; docs/migration-engine.md). Per pair, atomically:
--   source gone                 -> 'gone' (a key deleted meanwhile stays deleted)
--   destination absent          -> COPY without REPLACE (all of it, with its TTL): 'copied'
--   destination there, a hash,
--   string or list              -> 'skipped' (dual writes keep it current)
--   destination there, a set or
--   zset of at most ARGV[4]     -> members merged (ZADD NX keeps the live score),
--                                  the source TTL carried when the destination has
--                                  none: 'merged:N'
--   a set or zset larger than
--   ARGV[4], destination there
--   or not                      -> 'big' (the caller merges it in chunks)
-- KEYS[1] the backfill record  KEYS[2] the phase hash; then source,
-- destination pairs
-- ARGV[1] owner token of the run (the record's `owner`)  ARGV[2] '1': dry run
-- ARGV[3] cursor to checkpoint ('' none: it only ever names work already done;
-- with a 'big' pair it is also kept in `cursor_held`, which the run resumes
-- from until the client has merged that collection in chunks and cleared it)
-- ARGV[4] largest collection merged here  ARGV[5] the expected type of each
-- pair, one letter each: h hash, s set, z zset, l list, t string
-- Reply: one status string per pair, 'error:<text>' for a per-key error.
-- Errors: STEPQ_CONFLICT when another process took the run over, or when
-- the phase no longer allows a backfill (lib/backfill_guard.lua).
local rec, owner, dry = KEYS[1], ARGV[1], ARGV[2] == '1'
local refused = backfill_refused(rec, KEYS[2], owner, dry)
if refused then
    return redis.error_reply(refused)
end
local limit = tonumber(ARGV[4])
local TYPES = {h = 'hash', s = 'set', z = 'zset', l = 'list', t = 'string'}
local n = {copied = 0, merged = 0, skipped = 0, gone = 0, errors = 0}
local out = {}

-- A set or zset destination that exists gets the members it lacks.
local function merge(src, dst, t)
    local added = 0
    if t == 'set' then
        local m = redis.call('SMEMBERS', src)
        for i = 1, #m, 1000 do
            added = added + redis.call('SADD', dst, unpack(m, i, math.min(i + 999, #m)))
        end
    else
        local m = redis.call('ZRANGE', src, 0, -1, 'WITHSCORES')
        for i = 1, #m, 2000 do
            local args = {}
            for j = i, math.min(i + 1999, #m), 2 do
                args[#args + 1] = m[j + 1]
                args[#args + 1] = m[j]
            end
            added = added + redis.call('ZADD', dst, 'NX', unpack(args))
        end
    end
    local exp = redis.call('PEXPIRETIME', src)
    if exp > 0 and redis.call('PTTL', dst) == -1 then
        redis.call('PEXPIREAT', dst, exp)
    end
    return added
end

local function one(src, dst, want)
    -- A set or zset above the limit is never copied whole, even to an
    -- absent destination: one COPY of millions of members would hold Redis
    -- for seconds. The caller merges it in chunks (a source of another
    -- type than the map's goes on to be reported below).
    if (want == 'set' or want == 'zset') and redis.call('TYPE', src).ok == want then
        local card = want == 'set' and redis.call('SCARD', src) or redis.call('ZCARD', src)
        if card > limit then
            return 'big'
        end
    end
    -- The common case first, in two calls: the destination absent. COPY
    -- refuses a destination that exists and copies all of the key with its
    -- TTL; a source of another type than the key map's is taken back out
    -- (the script is atomic: nobody sees it), and reported.
    if not dry and redis.call('COPY', src, dst) == 1 then
        local t = redis.call('TYPE', dst).ok
        if t ~= want then
            redis.call('DEL', dst)
            n.errors = n.errors + 1
            return 'error:source is a ' .. t .. ', the key map says ' .. want
        end
        n.copied = n.copied + 1
        return 'copied'
    end
    -- Else the source is gone or the destination is there.
    local t = redis.call('TYPE', src).ok
    if t == 'none' then
        n.gone = n.gone + 1
        return 'gone'
    end
    if t ~= want then
        n.errors = n.errors + 1
        return 'error:source is a ' .. t .. ', the key map says ' .. want
    end
    local dt = redis.call('TYPE', dst).ok
    if dt == 'none' then
        if not dry then
            redis.call('COPY', src, dst)
        end
        n.copied = n.copied + 1
        return 'copied'
    end
    if dt ~= t then
        n.errors = n.errors + 1
        return 'error:destination is a ' .. dt .. ', the source a ' .. t
    end
    if t ~= 'set' and t ~= 'zset' then
        n.skipped = n.skipped + 1
        return 'skipped'
    end
    local card = t == 'set' and redis.call('SCARD', src) or redis.call('ZCARD', src)
    if card > limit then
        return 'big'
    end
    if dry then
        n.skipped = n.skipped + 1
        return 'merged:0'
    end
    local added = merge(src, dst, t)
    n.merged = n.merged + added
    if added == 0 then
        n.skipped = n.skipped + 1
    end
    return 'merged:' .. added
end

local big = false
for i = 3, #KEYS, 2 do
    local want = TYPES[string.sub(ARGV[5], (i - 1) / 2, (i - 1) / 2)] or 'unknown'
    out[#out + 1] = one(KEYS[i], KEYS[i + 1], want)
    big = big or out[#out] == 'big'
end
if not dry then
    redis.call('HINCRBY', rec, 'keys_done', (#KEYS - 2) / 2)
    for k, v in pairs(n) do
        if v > 0 then
            redis.call('HINCRBY', rec, k, v)
        end
    end
    if ARGV[3] ~= '' then
        redis.call('HSET', rec, 'cursor', ARGV[3])
        if big then
            redis.call('HSETNX', rec, 'cursor_held', ARGV[3])
        end
    end
end
return out
