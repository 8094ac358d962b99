-- reconcile_batch.lua
-- Makes old keys equal to their new twins, new being the truth (the
-- rollback out of phase 'step'; docs/migration-engine.md). Per pair,
-- atomically: the new key exists -> COPY it over the old one (REPLACE, with
-- its TTL); it does not -> DEL the old one, so nothing deleted in 'step'
-- comes back.
-- KEYS pairs: new key, old key   ARGV[1] '1': dry run
-- Reply: {keys copied, keys deleted}.
local copied, deleted = 0, 0
for i = 1, #KEYS, 2 do
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
