-- cleanup_batch.lua
-- Deletes the old keys of one batch after the switch to 'step', deciding
-- from the records (design invariant 7), atomically for the batch.
-- Records are the truth, collections are indexes:
--   a step record  job:X   deleted when step:X exists, or when X ended
--                          (its new twin expired by retention); a step
--                          that is pending or active with no new record was
--                          written by someone else than stepq after the
--                          switch: kept and named (adopted with ARGV[3])
--   other per-id   job:X:progress  deleted when its twin exists or its step
--                          is not kept
--   a collection   jobs:pending, jobs:active, worker:W:jobs ...: decided
--                          member by member: a member is safe when the new
--                          record of its step exists (and, when it says
--                          pending, the new pending queue holds it) or its
--                          step is gone from both sides; the collection is
--                          deleted when every member is safe, whether or not
--                          its own twin exists (an empty set has no key).
-- Adopting a step (ARGV[3] = '1'): its old record (and progress) is copied
-- to the new name without REPLACE, marked pending and put in the new
-- pending queue at its priority; the old keys are then deleted as above.
--
-- Mode 'pairs':
--   KEYS[2i-1] an old key   KEYS[2i] its new twin
--   ARGV[5] one letter per pair: r step record, o other per-id key,
--           c collection; ARGV[6] largest collection decided here
--   ARGV[7..] the step id of each pair ('' for a fixed collection)
--   Reply {deleted, kept, gone, {kept keys}, {why each was kept}, adopted,
--          {collections too big for one call}}
-- Mode 'members' (one chunk of a big collection, read with SSCAN/ZSCAN):
--   KEYS[1] the collection   ARGV[5..] the members
--   Reply {unsafe members, the first unsafe member or '', adopted}
-- Both: ARGV[1] mode  ARGV[2] '1': dry run  ARGV[3] '1': adopt
--   ARGV[4] the key map's names this script needs, joined by NUL: the old and
--   new step templates, the new pending queue, the old and new progress
--   templates (templates with {id}; a part is empty when the map lacks it).
-- EXISTS, HGET and ZSCORE do not update a key's access time (OBJECT
-- IDLETIME), which is what cleanup's reader check reads. No errors.
local mode, dry, adopt = ARGV[1], ARGV[2] == '1', ARGV[3] == '1'
local tpl = {}
for part in string.gmatch(ARGV[4] .. '\0', '([^%z]*)%z') do
    tpl[#tpl + 1] = part
end
local NEW_PENDING = tpl[3]
local ENDED = {completed = true, failed = true, cancelled = true}
local adopted = 0

-- Each template split once around its {id}: a name is then one
-- concatenation (a gsub a name was most of the script's own time for the
-- members of a big collection).
local head, tail = {}, {}
for t = 1, #tpl do
    local at = string.find(tpl[t], '{id}', 1, true)
    head[t] = at and string.sub(tpl[t], 1, at - 1) or tpl[t]
    tail[t] = at and string.sub(tpl[t], at + 4) or ''
end

-- The name from template number `t` of tpl for `id`.
local function name(t, id)
    if head[t] == tpl[t] then
        return tpl[t]
    end
    return head[t] .. id .. tail[t]
end

local function rec(side, id)
    return name(side, id)
end

-- Puts step `id` (its new record says pending) in the new pending queue.
local function enqueue(id)
    redis.call('ZADD', NEW_PENDING, tonumber(redis.call('HGET', rec(2, id), 'priority')) or 0, id)
    adopted = adopted + 1
end

-- The status of a record, or nil when it is absent; false when the key is
-- not a hash (damaged data: never treated as safe to drop).
local function status(k)
    -- HGET first: a record with a status (the common case) costs one call;
    -- nil from HGET is an absent key or a hash without the field.
    local v = redis.pcall('HGET', k, 'status')
    if type(v) == 'table' then
        return false
    end
    if v then
        return v
    end
    if redis.call('EXISTS', k) == 0 then
        return nil
    end
    return ''
end

-- Copies an old step the new side does not know, as a pending step.
local function take(id)
    local o, n = rec(1, id), rec(2, id)
    if dry then
        adopted = adopted + 1
        return true
    end
    if redis.call('COPY', o, n) ~= 1 then
        return false
    end
    redis.call('HSET', n, 'status', 'pending')
    redis.call('HDEL', n, 'worker', 'token')
    enqueue(id)
    if tpl[4] ~= '' and tpl[5] ~= '' then
        redis.call('COPY', name(4, id), name(5, id)) -- nothing when there is no progress
    end
    return true
end

-- Why the step `id` keeps its old keys, or nil when they may go: the new
-- side must know where the step is.
local function unsafe(id)
    local ns = status(rec(2, id))
    if ns == false then
        return 'its new record is not a hash'
    end
    if ns ~= nil then
        if ns == 'pending' and not redis.call('ZSCORE', NEW_PENDING, id) then
            if adopt and not dry then
                enqueue(id)
                return nil
            end
            return 'step \'' .. id .. '\' is pending in no new queue'
        end
        return nil
    end
    local os = status(rec(1, id))
    if os == nil or (os and ENDED[os]) then
        return nil -- gone from both sides, or ended: nothing to run
    end
    if adopt and take(id) then
        return nil
    end
    local what = os == false and 'damaged' or os == '' and 'without a status' or os
    return 'step \'' .. id .. '\' is ' .. what .. ' on the old side only'
end

if mode == 'members' then
    local n, first = 0, ''
    local h2, t2 = head[2], tail[2]
    for i = 5, #ARGV do
        -- The common member first, inline (a big collection's members are
        -- most of the calls): its new record has a status, and when it is
        -- pending the new pending queue holds it, which unsafe() finds safe
        -- as well. Any other answer (no record, no status, not a hash, a
        -- pending step in no queue) goes through unsafe() for its verdict.
        local v = h2 ~= tpl[2] and redis.pcall('HGET', h2 .. ARGV[i] .. t2, 'status')
        local safe = type(v) == 'string' and
                         (v ~= 'pending' or redis.call('ZSCORE', NEW_PENDING, ARGV[i]))
        if not safe and unsafe(ARGV[i]) then
            n = n + 1
            if first == '' then
                first = ARGV[i]
            end
        end
    end
    return {n, first, adopted}
end

local kinds, limit = ARGV[5], tonumber(ARGV[6])
local deleted, kept, gone = 0, 0, 0
local kept_keys, kept_why, big = {}, {}, {}


-- Why the old key `o` (kind `kind`, of step `id`) must stay, or nil.
local function judge(o, n, kind, id)
    if kind == 'c' then
        local t = redis.call('TYPE', o).ok
        if t ~= 'set' and t ~= 'zset' then
            return 'it is a ' .. t .. ', not a collection'
        end
        local zset = t == 'zset'
        if redis.call(zset and 'ZCARD' or 'SCARD', o) > limit then
            return 'big'
        end
        for _, m in ipairs(zset and redis.call('ZRANGE', o, 0, -1) or redis.call('SMEMBERS', o)) do
            local why = unsafe(m)
            if why then
                return 'it holds a step the new side lacks (' .. why .. ')'
            end
        end
        return nil
    end
    if redis.call('EXISTS', n) == 1 then
        return nil
    end
    return unsafe(id)
end

-- The common case first: a per-id key whose twin exists is safe to delete
-- (judge's first rule). One EXISTS of all the batch's twins says whether
-- every one exists (it counts each name it is given), else each is asked
-- alone; the keys so found go in one UNLINK, whose count tells the deleted
-- from the gone. A call costs more than the work it does, so the common
-- batch takes two calls, not two a key. Nothing below removes a twin or
-- reads the old keys of a step whose new record exists, so taking these
-- first changes no verdict.
local npairs, twins, fast, rest = #KEYS / 2, {}, {}, {}
for i = 1, npairs do
    if string.byte(kinds, i) ~= 99 then -- 'c'
        twins[#twins + 1] = KEYS[2 * i]
    end
end
local all = #twins > 0 and redis.call('EXISTS', unpack(twins)) == #twins
for i = 1, npairs do
    if string.byte(kinds, i) ~= 99 and (all or redis.call('EXISTS', KEYS[2 * i]) == 1) then
        fast[#fast + 1] = KEYS[2 * i - 1]
    else
        rest[#rest + 1] = i
    end
end
if #fast > 0 then
    local n = redis.call(dry and 'EXISTS' or 'UNLINK', unpack(fast))
    deleted = deleted + n
    gone = gone + #fast - n
end

for _, i in ipairs(rest) do
    local o, n = KEYS[2 * i - 1], KEYS[2 * i]
    local kind, id = string.sub(kinds, i, i), ARGV[6 + i]
    if redis.call('EXISTS', o) == 0 then
        gone = gone + 1
    else
        local why = judge(o, n, kind, id)
        if why == 'big' then
            big[#big + 1] = o
        elseif why then
            kept = kept + 1
            kept_keys[#kept_keys + 1] = o
            kept_why[#kept_why + 1] = why
        else
            if not dry then
                redis.call('UNLINK', o)
            end
            deleted = deleted + 1
        end
    end
end
return {deleted, kept, gone, kept_keys, kept_why, adopted, big}
