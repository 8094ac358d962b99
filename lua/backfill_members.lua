-- backfill_members.lua @part backfill_guard
-- Merges one chunk of a large set or zset into its new name (the backfill
-- of big collections, read by the caller with SSCAN/ZSCAN). Each member is
-- re-checked in the source here, so a member removed meanwhile (a step
-- claimed or deleted) is not put back; a zset member takes the source's
-- current score and never overwrites one already there (ZADD NX). The
-- source TTL is carried when the destination has none.
-- KEYS[1] the backfill record  KEYS[2] the phase hash  KEYS[3] source
-- KEYS[4] destination
-- ARGV[1] owner token  ARGV[2] '1': dry run  ARGV[3] 'set' or 'zset'
-- ARGV[4] number of checkpoint field/value pairs that follow, then the
-- pairs (HSET on the record with the chunk), then the members.
-- Reply: {members added, members gone from the source}.
-- Errors: STEPQ_CONFLICT when another process took the run over, or when
-- the phase no longer allows a backfill (lib/backfill_guard.lua).
local rec, src, dst = KEYS[1], KEYS[3], KEYS[4]
local owner, dry, t = ARGV[1], ARGV[2] == '1', ARGV[3]
local refused = backfill_refused(rec, KEYS[2], owner, dry)
if refused then
    return redis.error_reply(refused)
end
local ncp = tonumber(ARGV[4])
local first = 5 + 2 * ncp
local ms = {unpack(ARGV, first)}
local added, gone = 0, 0
-- Two calls a chunk, not two a member (a redis.call() costs more than the
-- member work it does): the members still in the source, in one
-- SMISMEMBER/ZMSCORE, then one SADD/ZADD NX of them (in a dry run, the
-- same read of the destination instead).
if #ms > 0 then
    local zset = t == 'zset'
    local here = redis.call(zset and 'ZMSCORE' or 'SMISMEMBER', src, unpack(ms))
    local keep = {}
    for i, m in ipairs(ms) do
        if zset and here[i] then
            keep[#keep + 1] = here[i]
            keep[#keep + 1] = m
        elseif not zset and here[i] == 1 then
            keep[#keep + 1] = m
        else
            gone = gone + 1
        end
    end
    if #keep > 0 and not dry then
        added = zset and redis.call('ZADD', dst, 'NX', unpack(keep)) or
                    redis.call('SADD', dst, unpack(keep))
    elseif #keep > 0 then
        local step = zset and 2 or 1
        local there = {}
        for i = step, #keep, step do
            there[#there + 1] = keep[i]
        end
        for i, x in ipairs(redis.call(zset and 'ZMSCORE' or 'SMISMEMBER', dst, unpack(there))) do
            if (zset and not x) or (not zset and x == 0) then
                added = added + 1
            end
        end
    end
end
if not dry then
    local exp = redis.call('PEXPIRETIME', src)
    if exp > 0 and redis.call('PTTL', dst) == -1 then
        redis.call('PEXPIREAT', dst, exp)
    end
    redis.call('HINCRBY', rec, 'keys_done', #ARGV - first + 1)
    redis.call('HINCRBY', rec, 'merged', added)
    for i = 5, first - 1, 2 do
        redis.call('HSET', rec, ARGV[i], ARGV[i + 1])
    end
end
return {added, gone}
