-- progress.lua @prelude
-- Records progress of a held step in its progress hash.
-- ARGV[3] id  ARGV[4] token  ARGV[5] percent (0-100)  ARGV[6] message
-- Returns 1. Errors: STEPQ_NOTFOUND, STEPQ_CONFLICT (token does not hold it).
local id = ARGV[3]
held_step(id, ARGV[4])
hset('progress', id, 'percent', ARGV[5], 'message', ARGV[6], 'updated_at', NOW)
emit('progress', id, true, ',"percent":', ARGV[5], ',"message":', js(ARGV[6]))
return 1
