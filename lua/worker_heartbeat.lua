-- worker_heartbeat.lua @prelude
-- Renews a worker's heartbeat.
-- ARGV[3] worker  ARGV[4] heartbeat ttl ms
-- Returns 1. Errors: STEPQ_NOTFOUND when the worker was reaped (its steps
-- went back to the queue; it must register again).
local w = ARGV[3]
if call('EXISTS', wkey(w)) == 0 then
    raise('NOTFOUND', "worker '" .. w .. "' is not registered (reaped?); register it again")
end
call('SET', wkey(w, ':heartbeat'), NOW, 'PX', ARGV[4])
return 1
