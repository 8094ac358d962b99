-- backup_page.lua
-- One page of the backup (src/backup.c): for each key, its idle time, then
-- its DUMP and absolute expiry, all in one atomic call so that a key's
-- value and expiry agree. OBJECT IDLETIME comes first: it leaves the access
-- time alone and DUMP resets it (docs/backup.md, "Who still reads old
-- keys"). A set or zset of more than ARGV[1] members is not dumped: one
-- DUMP of millions of members holds Redis and the client's memory for
-- seconds, so the caller reads it in chunks (SSCAN/ZSCAN) instead.
-- KEYS the keys of one page  ARGV[1] the member count above which a set or
-- zset is chunked  ARGV[2] one letter per key: 'c' for a key whose rule
-- is a set or zset (its type and size are checked), '-' for the others
-- (dumped at once: most keys are step hashes, and TYPE costs a call each).
-- Reply: four items per key: idle seconds (false under an LFU policy), the
-- DUMP payload (false: gone, or chunked), PEXPIRETIME (-2: gone), and
-- 's' or 'z' for a chunked set or zset ('' otherwise).
local big, check = tonumber(ARGV[1]), ARGV[2]
local out = {}
for i, k in ipairs(KEYS) do
    local ok, idle = pcall(redis.call, 'OBJECT', 'IDLETIME', k)
    local kind = ''
    if string.byte(check, i) == 99 then -- 'c'
        local t = redis.call('TYPE', k).ok
        if t == 'set' and redis.call('SCARD', k) > big then
            kind = 's'
        elseif t == 'zset' and redis.call('ZCARD', k) > big then
            kind = 'z'
        end
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
