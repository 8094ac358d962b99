-- phase_move.lua
-- Moves the stored phase, compare-and-set, and appends to the audit log.
-- KEYS[1] phase hash  KEYS[2] audit list  KEYS[3] stats hash
-- ARGV[1] expected current phase  ARGV[2] new phase  ARGV[3] audit entry
-- (JSON, written as is)  ARGV[4] audit entries to keep
-- Besides phase, since and seq, the phase hash keeps `dual_write_since`
-- (when writers started writing both sides: set on the way out of 'job',
-- cleared on the way back into it) and `misses_at_since` (the stats'
-- primary_misses when the phase was entered) and `untrusted_since` (set on
-- the way back into 'job': writers stop writing the new keys, which keep
-- what they held then; cleared by a repair, lua/trust_new.lua).
-- Returns the new sequence number. Errors: STEPQ_CONFLICT when the phase
-- changed since the caller read it.
local cur = redis.call('HGET', KEYS[1], 'phase') or 'job'
if cur ~= ARGV[1] then
    return redis.error_reply('STEPQ_CONFLICT the phase changed to ' .. cur ..
        ' while this move was prepared; read it again')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local misses = redis.call('HGET', KEYS[3], 'primary_misses') or '0'
redis.call('HSET', KEYS[1], 'phase', ARGV[2], 'since', now, 'misses_at_since', misses)
if ARGV[2] == 'job' then
    redis.call('HDEL', KEYS[1], 'dual_write_since')
    redis.call('HSET', KEYS[1], 'untrusted_since', now)
elseif cur == 'job' then
    redis.call('HSET', KEYS[1], 'dual_write_since', now)
end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
return seq
