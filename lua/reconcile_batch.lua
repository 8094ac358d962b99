-- reconcile_batch.lua
-- Makes old keys equal to their new twins, new being the truth (the
-- rollback out of phase 'step'; docs/migration-engine.md). Per pair,
-- atomically: the new key exists -> COPY it over the old one (REPLACE, with
-- its TTL); it does not -> DEL the old one, so nothing deleted in 'step'
-- comes back.
-- KEYS[1] the phase hash; then pairs: truth key, twin key
-- ARGV[1] '1': dry run  ARGV[2] the phases this pass may run in, each
-- between commas (',dual-write,')  ARGV[3] what runs it, for the error
-- Reply: {keys copied, keys deleted}.
-- Errors: STEPQ_CONFLICT when the stored phase is not one of ARGV[2] (the
-- phase moved while the pass ran: the other side may be written alone).
local phase = redis.call('HGET', KEYS[1], 'phase') or 'job'
if not string.find(ARGV[2], ',' .. phase .. ',', 1, true) then
    return redis.error_reply("STEPQ_CONFLICT the phase moved to '" .. phase .. "' while " ..
        ARGV[3] .. ' ran; nothing more was changed')
end
local copied, deleted = 0, 0
for i = 2, #KEYS, 2 do
    if redis.call('EXISTS', KEYS[i]) == 1 then
        if ARGV[1] ~= '1' then
            redis.call('COPY', KEYS[i], KEYS[i + 1], 'REPLACE')
        end
        copied = copied + 1
    elseif redis.call('EXISTS', KEYS[i + 1]) == 1 then
        if ARGV[1] ~= '1' then
            redis.call('DEL', KEYS[i + 1])
        end
        deleted = deleted + 1
    end
end
return {copied, deleted}
