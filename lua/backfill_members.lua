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
local added, gone = 0, 0
for i = first, #ARGV do
    local m = ARGV[i]
    if t == 'set' then
        if redis.call('SISMEMBER', src, m) == 1 then
            if not dry then
                added = added + redis.call('SADD', dst, m)
            elseif redis.call('SISMEMBER', dst, m) == 0 then
                added = added + 1
            end
        else
            gone = gone + 1
        end
    else
        local s = redis.call('ZSCORE', src, m)
        if s then
            if not dry then
                added = added + redis.call('ZADD', dst, 'NX', s, m)
            elseif not redis.call('ZSCORE', dst, m) then
                added = added + 1
            end
        else
            gone = gone + 1
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
