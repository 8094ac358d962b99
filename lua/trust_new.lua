-- trust_new.lua
-- Clears the mark a rollback to 'job' leaves on the new keys
-- (`untrusted_since` of the phase hash), once a repair has made them equal to
-- the old ones: only while the phase is still 'dual-write' and the repair
-- started after writers began writing both sides (a repair from before a
-- later rollback proves nothing). Atomic, so a move cannot slip in between
-- the check and the clear.
-- KEYS[1] the phase hash   ARGV[1] when the repair started (ms)
-- Returns 1 when the mark was cleared (or there was none), 0 when it stays.
local h = redis.call('HMGET', KEYS[1], 'phase', 'dual_write_since')
local since = tonumber(h[2])
if h[1] ~= 'dual-write' or not since or since > tonumber(ARGV[1]) then
    return 0
end
redis.call('HDEL', KEYS[1], 'untrusted_since')
return 1
