-- worker_heartbeat.lua @prelude
-- Renews a worker's heartbeat, only for the process whose registration it
-- is (its instance token): a worker never renews another's.
-- ARGV[3] worker  ARGV[4] heartbeat ttl ms  ARGV[5] instance token
-- Returns 1. Errors: STEPQ_NOTFOUND when the worker was reaped (its steps
-- went back to the queue; it must register again); STEPQ_CONFLICT when
-- another process registered the id since (it took over a registration
-- whose heartbeat had run out).
local w = ARGV[3]
local cur = call('HMGET', wkey(w), 'instance', 'host', 'pid')
if call('EXISTS', wkey(w)) == 0 then
    raise('NOTFOUND', "worker '" .. w .. "' is not registered (reaped?); register it again")
end
if cur[1] ~= ARGV[5] then
    raise('CONFLICT', "worker '" .. w .. "' is registered by another process now (host " ..
        tostring(cur[2] or '?') .. ', pid ' .. tostring(cur[3] or '?') ..
        '); stop this one, or run it under another --id')
end
call('SET', wkey(w, ':heartbeat'), NOW, 'PX', ARGV[4])
return 1
