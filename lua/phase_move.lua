-- phase_move.lua
-- Moves the stored phase, compare-and-set, and appends to the audit log.
-- KEYS[1] phase hash  KEYS[2] audit list
-- ARGV[1] expected current phase  ARGV[2] new phase  ARGV[3] audit entry
-- (JSON, written as is)  ARGV[4] audit entries to keep
-- Returns the new sequence number. Errors: STEPQ_CONFLICT when the phase
-- changed since the caller read it.
local cur = redis.call('HGET', KEYS[1], 'phase') or 'job'
if cur ~= ARGV[1] then
    return redis.error_reply('STEPQ_CONFLICT the phase changed to ' .. cur ..
        ' while this move was prepared; read it again')
end
local t = redis.call('TIME')
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'phase', ARGV[2], 'since', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
return seq
