-- get.lua @prelude
-- Reads a step and its progress from the side the phase reads (in dual-read
-- a record found only under the old pattern is copied over first).
-- ARGV[3] id
-- Returns {step fields, progress fields} (flat field/value arrays), or nil.
local id = ARGV[3]
local side = locate('step', id)
if not side then
    return nil
end
local step = call('HGETALL', key('step', side, id))
local pside = locate('progress', id)
local prog = pside and call('HGETALL', key('progress', pside, id)) or {}
return {step, prog}
