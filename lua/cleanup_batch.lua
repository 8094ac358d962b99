-- cleanup_batch.lua
-- Deletes the old keys of one batch whose new twin exists, atomically for
-- the batch (no process can create or drop a twin halfway through it).
-- KEYS[2i-1] an old key   KEYS[2i] its new twin (i = 1 .. #KEYS/2)
-- ARGV[1] '1' for a dry run (count only, delete nothing), else '0'
-- Returns {deleted, kept, gone, {kept old keys...}}: deleted with UNLINK (or
-- would be), kept because the twin is missing, gone because the old key no
-- longer exists (a key SCAN returned twice, or deleted meanwhile).
-- EXISTS does not update a key's access time, so this script leaves the
-- evidence cleanup reads (OBJECT IDLETIME) as it was. No errors of its own.
local dry = ARGV[1] == '1'
local deleted, kept, gone = 0, 0, 0
local kept_keys = {}
for i = 1, #KEYS - 1, 2 do
    if redis.call('EXISTS', KEYS[i]) == 0 then
        gone = gone + 1
    elseif redis.call('EXISTS', KEYS[i + 1]) == 1 then
        if not dry then
            redis.call('UNLINK', KEYS[i])
        end
        deleted = deleted + 1
    else
        kept = kept + 1
        kept_keys[#kept_keys + 1] = KEYS[i]
    end
end
return {deleted, kept, gone, kept_keys}
