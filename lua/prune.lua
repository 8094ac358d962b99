-- prune.lua @prelude
-- Keeps the completed and failed sets true and bounded, a page at a time:
-- the reaper runs it once a pass, so the work of one call is bounded by
-- the page size whatever the sets hold.
--
-- For each of the two sets, on the side this phase reads: one SSCAN from
-- the cursor kept in the prune record (NS .. 'stepq:prune', fields
-- `<set>_cursor` and `<set>_key`: a cursor is only good for the key it came
-- from, so a phase move that changes the key starts over), COUNT ARGV[3].
-- A member whose record is gone (expired, deleted) or says another status
-- is dropped from the set on the sides this phase writes (`pruned`): the
-- record is the truth, the set an index (design.md, invariant 7). Then,
-- while the set holds more than its cap (BullMQ's removeOnComplete:
-- {count}), the members of this page whose record has the oldest
-- `finished_at` are removed, record and progress too (`capped`), as many
-- as the set is over its cap. The sets are not sorted (a zset scored by
-- finish time would change the key map), so the order is oldest first
-- within a page, not across the whole set.
-- Records are read without the lazy copy of dual-read (no `locate`): a
-- prune only looks.
-- ARGV[3] SSCAN COUNT per set  ARGV[4] cap of the completed set (0: none)
-- ARGV[5] cap of the failed set (0: none)
-- Returns {pruned, capped}.
local count, caps = ARGV[3], {completed = tonumber(ARGV[4]), failed = tonumber(ARGV[5])}
local PRUNE_KEY = NS .. 'stepq:prune'

-- The status and finish time of a step's record where this phase reads it
-- (the side read first, then the old one in the fallback phases): nil when
-- the record is gone, false when its key is not a step record.
local function record(id)
    for side = RSIDE, FALLBACK and 1 or RSIDE, -1 do
        local k = key('step', side, id)
        local v = try('HMGET', k, 'status', 'finished_at')
        if v.err then
            return false
        end
        if v[1] or v[2] or call('EXISTS', k) == 1 then
            return v
        end
    end
    return nil
end

local pruned, capped = 0, 0
for _, state in ipairs({'completed', 'failed'}) do
    local set = key(state, RSIDE)
    local saved = call('HMGET', PRUNE_KEY, state .. '_cursor', state .. '_key')
    local cursor = (saved[2] == set and saved[1]) or '0'
    local page = call('SSCAN', set, cursor, 'COUNT', count)
    local kept = {}
    for _, id in ipairs(page[2]) do
        local v = record(id)
        if v == nil or (v and v[1] and v[1] ~= state) then
            coll('SREM', state, nil, id)
            pruned = pruned + 1
        elseif v then
            kept[#kept + 1] = {tonumber(v[2]) or 0, id}
        end
    end
    local over = caps[state] > 0 and call('SCARD', set) - caps[state] or 0
    if over > 0 and #kept > 0 then
        table.sort(kept, function(a, b)
            return a[1] < b[1]
        end)
        for i = 1, math.min(over, #kept) do
            local id = kept[i][2]
            coll('DEL', 'step', id)
            coll('DEL', 'progress', id)
            coll('SREM', state, nil, id)
            capped = capped + 1
        end
    end
    call('HSET', PRUNE_KEY, state .. '_cursor', page[1], state .. '_key', set)
end
if pruned > 0 then
    call('HINCRBY', STATS_KEY, 'pruned', pruned)
end
if capped > 0 then
    call('HINCRBY', STATS_KEY, 'capped', capped)
end
return {pruned, capped}
