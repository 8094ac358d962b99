-- backup_page.lua
-- One page of the backup (src/backup.c): for each key, its idle time, then
-- its DUMP and absolute expiry, all in one atomic call so that a key's
-- value and expiry agree. OBJECT IDLETIME comes first: it leaves the access
-- time alone and DUMP resets it (docs/backup.md, "Who still reads old
-- keys"). A set or zset of more than ARGV[1] members is not dumped: one
-- DUMP of millions of members holds Redis and the client's memory for
-- seconds, so the caller reads it in chunks (SSCAN/ZSCAN) instead.
-- The caller sends it the keys of collection rules only (src/backup.c: the
-- step records and others, most keys, go in MULTI/EXEC blocks), and each
-- key's type and size are checked.
-- KEYS the keys of one part  ARGV[1] the member count above which a set or
-- zset is chunked
-- Reply: four items per key: idle seconds (false under an LFU policy), the
-- DUMP payload (false: gone, or chunked), PEXPIRETIME (-2: gone), and
-- 's' or 'z' for a chunked set or zset ('' otherwise).
local big = tonumber(ARGV[1])
local out = {}
for i, k in ipairs(KEYS) do
    local ok, idle = pcall(redis.call, 'OBJECT', 'IDLETIME', k)
    local kind = ''
    local t = redis.call('TYPE', k).ok
    if t == 'set' and redis.call('SCARD', k) > big then
        kind = 's'
    elseif t == 'zset' and redis.call('ZCARD', k) > big then
        kind = 'z'
    end
    local dump = false
    if kind == '' then
        dump = redis.call('DUMP', k)
    end
    local n = #out
    out[n + 1] = ok and idle or false
    out[n + 2] = dump
    out[n + 3] = redis.call('PEXPIRETIME', k)
    out[n + 4] = kind
end
return out
