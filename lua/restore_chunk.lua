-- restore_chunk.lua
-- One chunk of a big set or zset restored from a backup (src/backup.c),
-- or its end. Whether the key existed before the restore is decided once,
-- at its first chunk: an existing key is kept as it is (unless --replace,
-- which deletes it first), and a key this restore creates is marked in the
-- hash KEYS[2] (field: the key, value: this restore's token) until its end.
-- Later chunks append only to a key so marked with this token, and the end
-- applies the expiry (last: a collection must not expire, nor carry a TTL,
-- before all its members are back) and removes the mark. A restore killed
-- between the first chunk and the end leaves the key marked: partial, with
-- no expiry; the next restore refuses while the mark is there, unless
-- --replace (docs/backup.md, "A restore cut short").
-- KEYS[1] the key  KEYS[2] the marks (stepq:restoring)
-- ARGV[1] 'first', 'next' or 'end'  ARGV[2] this restore's token
-- first, next: ARGV[3] '1': --replace  ARGV[4] 'set' or 'zset', then the
-- members (set) or score, member pairs (zset).
-- end: ARGV[3] the absolute expiry in ms, -1: none.
-- Reply: 1 written (the end: the key is complete), 0 not this restore's
-- key (it existed at the first chunk): nothing written.
local key, marks, mode, token = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
if mode == 'first' then
    if redis.call('EXISTS', key) == 1 then
        if ARGV[3] ~= '1' then
            return 0
        end
        redis.call('DEL', key)
    end
    redis.call('HSET', marks, key, token)
elseif redis.call('HGET', marks, key) ~= token then
    return 0
end
if mode == 'end' then
    local exp = tonumber(ARGV[3])
    if exp > 0 then
        redis.call('PEXPIREAT', key, exp)
    end
    redis.call('HDEL', marks, key)
    return 1
end
-- Sliced: unpack has a limit on the values it returns at once.
local cmd, step = 'SADD', 1
if ARGV[4] == 'zset' then
    cmd, step = 'ZADD', 2
end
local i, n = 5, #ARGV
while i <= n do
    local last = math.min(n, i + 1000 * step - 1)
    redis.call(cmd, key, unpack(ARGV, i, last))
    i = last + 1
end
return 1
