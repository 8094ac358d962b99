-- submit.lua @prelude
-- Creates a pending step on every side the phase writes.
-- ARGV[3] id  ARGV[4] type  ARGV[5] priority  ARGV[6] requires (comma list)
-- ARGV[7] max_attempts  ARGV[8] payload (JSON text)
-- Returns 1 when created, 0 when a step with this id exists already (a
-- retried submit after a lost reply is a no-op, not a duplicate).
local id = ARGV[3]
for s = 1, 2 do
    if redis.call('EXISTS', key('step', s, id)) == 1 then
        return 0
    end
end
for _, s in ipairs(WSIDES) do
    redis.call('HSET', key('step', s, id), 'id', id, 'type', ARGV[4], 'priority', ARGV[5],
        'status', 'pending', 'requires', ARGV[6], 'max_attempts', ARGV[7], 'attempts', 0,
        'payload', ARGV[8], 'created_at', NOW, 'updated_at', NOW)
    redis.call('ZADD', key('pending', s), ARGV[5], id)
end
emit({type = 'submitted', step = id, step_type = ARGV[4], priority = tonumber(ARGV[5])})
return 1
