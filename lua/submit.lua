-- submit.lua @prelude
-- Creates pending steps on every side the phase writes: one or many in a
-- call (batches amortize the script's fixed cost).
-- ARGV[3] '1' when this is a retry after a lost reply, else '0'
-- then per step, 6 arguments: id, type, priority, requires (comma list),
-- max_attempts, payload (JSON text)
-- Returns how many steps were created. On a retry a step whose id exists
-- already is skipped: a resent submit is a no-op, not a duplicate. (Ids are
-- new UUIDv7s, so a first attempt need not look.)
local retry = ARGV[3] == '1'
local created = 0
local pending = batch('ZADD', 'pending')
for i = 4, TPL - 5, 6 do
    local id, prio = ARGV[i], ARGV[i + 2]
    local fresh = true
    if retry then
        fresh = call('EXISTS', key('step', 1, id)) == 0 and
            call('EXISTS', key('step', 2, id)) == 0
    end
    if fresh then
        -- In the dual phases the second side is a COPY of the first: a
        -- new hash copied is one memcpy, far cheaper than the same HSET
        -- again (callgrind). COPY refuses a destination that exists (it
        -- cannot, for a fresh id): then HSET it all the same.
        for s = S0, S1 do
            local k = key('step', s, id)
            if s == S0 or call('COPY', key('step', S0, id), k) == 0 then
                call('HSET', k, 'id', id, 'type', ARGV[i + 1], 'priority', prio,
                    'status', 'pending', 'requires', ARGV[i + 3], 'max_attempts', ARGV[i + 4],
                    'attempts', '0', 'payload', ARGV[i + 5], 'created_at', NOW, 'updated_at', NOW)
            end
        end
        pending[#pending + 1] = prio
        pending[#pending + 1] = id
        -- Ids and types were checked by the caller (stepq__valid_id): no
        -- JSON escaping needed.
        emit('submitted', id, true, ',"step_type":"', ARGV[i + 1], '","priority":', prio)
        created = created + 1
    end
end
flush()
return created
