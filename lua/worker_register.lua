-- worker_register.lua @prelude
-- Registers a worker: its hash of capabilities, idle, with a heartbeat.
-- ARGV[3] worker  ARGV[4] capabilities (comma list)  ARGV[5] heartbeat ttl ms
-- ARGV[6] host  ARGV[7] pid
-- Returns 1.
local w = ARGV[3]
call('HSET', wkey(w), 'id', w, 'capabilities', ARGV[4], 'host', ARGV[6], 'pid', ARGV[7],
    'registered_at', NOW)
call('SET', wkey(w, ':heartbeat'), NOW, 'PX', ARGV[5])
if call('SISMEMBER', WORKERS_ACTIVE, w) == 0 then
    call('SADD', WORKERS_IDLE, w)
end
worker_event({type = 'registered', worker = w, capabilities = ARGV[4]})
return 1
