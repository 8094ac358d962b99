-- list.lua @prelude
-- Ids of steps in one state, from the side the phase reads.
-- ARGV[3] state (pending, active, completed, failed)  ARGV[4] limit
-- Returns an array of ids: pending ones in claim order's priorities
-- (highest first), the others in set order.
local state, limit = ARGV[3], tonumber(ARGV[4])

local function from(side)
    local k = key(state, side)
    if state == 'pending' then
        return call('ZREVRANGE', k, 0, limit - 1)
    end
    local out, seen, cursor, rounds = {}, {}, '0', 0
    repeat
        local r = call('SSCAN', k, cursor, 'COUNT', 200)
        cursor = r[1]
        for _, id in ipairs(r[2]) do
            if not seen[id] and #out < limit then
                seen[id] = true
                out[#out + 1] = id
            end
        end
        rounds = rounds + 1
    until cursor == '0' or #out >= limit or rounds > 10000
    return out
end

local ids = from(RSIDE)
if #ids == 0 and FALLBACK then
    ids = from(1)
end
return ids
