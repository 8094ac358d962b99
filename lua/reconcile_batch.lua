-- reconcile_batch.lua
-- Makes one side's keys equal to their twins on the other, the truth: the
-- rollback out of phase 'step' (old from new) and the repair in 'dual-write'
-- (new from old); docs/migration-engine.md. Per pair, atomically: the truth
-- exists -> COPY it over the twin (REPLACE, with its TTL); it does not ->
-- DEL the twin, so nothing deleted on the side of the truth comes back.
--
-- Records are the truth about steps, so the rollback (ARGV[4] not 'plain')
-- looks at what it would delete: an old record without a new one whose
-- status is pending or active, and a member of an old queue collection
-- whose step the new side does not know (no new record) and whose old
-- record is pending or active, were written after the switch by someone
-- other than stepq (the old application): they are unknown. ARGV[4]:
--   'check'  writes nothing, reports them (the survey before the first pass)
--   'keep'   reconciles but keeps them, and reports them (the second pass:
--            the move is made, refusing is no longer possible)
--   'delete' reconciles and deletes them too, reporting them (--force)
-- Anything else old without a new twin (an ended step pruned in 'step', a
-- collection that emptied) is deleted as before.
-- KEYS[1] the phase hash; then pairs: truth key, twin key
-- ARGV[1] '1': dry run  ARGV[2] the phases this pass may run in, each
-- between commas (',dual-write,')  ARGV[3] what runs it, for the error
-- ARGV[4] 'plain', 'check', 'keep' or 'delete'
-- ARGV[5], ARGV[6] the old and the new step record templates ('{id}' in
-- each)  ARGV[7] each pair's role, one letter: r a step record, c a queue
-- collection (set or zset of a fixed name), o anything else
-- Reply: {keys copied, keys deleted, unknown count, names...} with at most
-- 20 names, each two elements: a record's key and '', or a collection's
-- key and the member.
-- Errors: STEPQ_CONFLICT when the stored phase is not one of ARGV[2] (the
-- phase moved while the pass ran: the other side may be written alone).
local phase = redis.call('HGET', KEYS[1], 'phase') or 'job'
if not string.find(ARGV[2], ',' .. phase .. ',', 1, true) then
    return redis.error_reply("STEPQ_CONFLICT the phase moved to '" .. phase .. "' while " ..
        ARGV[3] .. ' ran; nothing more was changed')
end
local mode, roles = ARGV[4], ARGV[7] or ''
local write = ARGV[1] ~= '1' and mode ~= 'check'
local copied, deleted, nunknown, names = 0, 0, 0, {}

local tpl = {}
for i = 1, 2 do
    local t = ARGV[4 + i]
    local s, e = string.find(t, '{id}', 1, true)
    tpl[i] = s and {string.sub(t, 1, s - 1), string.sub(t, e + 1)} or {t, ''}
end
local function record(side, id)
    return tpl[side][1] .. id .. tpl[side][2]
end

local function unknown(key, member)
    nunknown = nunknown + 1
    if #names < 40 then
        names[#names + 1] = key
        names[#names + 1] = member
    end
end

-- Is the old record k a live step (pending or active)?
local function live(k)
    local st = redis.pcall('HGET', k, 'status')
    return st == 'pending' or st == 'active'
end

-- The members of old collection w that new (t) lacks and whose step only
-- the old side knows, alive: {member, score or false}.
local function unknown_members(t, w, ty)
    local out = {}
    local m = ty == 'set' and redis.call('SMEMBERS', w) or redis.call('ZRANGE', w, 0, -1, 'WITHSCORES')
    local step = ty == 'set' and 1 or 2
    for i = 1, #m, step do
        local id = m[i]
        local there = ty == 'set' and redis.call('SISMEMBER', t, id) == 1 or
            (ty == 'zset' and redis.call('ZSCORE', t, id))
        if not there and redis.call('EXISTS', record(2, id)) == 0 and live(record(1, id)) then
            out[#out + 1] = {id, step == 2 and m[i + 1]}
        end
    end
    return out
end

for i = 2, #KEYS, 2 do
    local t, w = KEYS[i], KEYS[i + 1]
    local role = mode == 'plain' and 'o' or string.sub(roles, i / 2, i / 2)
    local keep = {}
    if role == 'c' then
        local ty = redis.call('TYPE', w).ok
        if ty == 'set' or ty == 'zset' then
            keep = unknown_members(t, w, ty)
            for _, k in ipairs(keep) do
                unknown(w, k[1])
            end
            if mode == 'delete' then
                keep = {}
            end
        end
    end
    if redis.call('EXISTS', t) == 1 then
        if write then
            redis.call('COPY', t, w, 'REPLACE')
        end
        copied = copied + 1
    elseif redis.call('EXISTS', w) == 1 then
        local hold = role == 'r' and live(w)
        if hold then
            unknown(w, '')
        end
        if not (hold and mode == 'keep') then
            if write then
                redis.call('DEL', w)
            end
            deleted = deleted + 1
        end
    end
    if write then
        for _, k in ipairs(keep) do
            if k[2] then
                redis.call('ZADD', w, k[2], k[1])
            else
                redis.call('SADD', w, k[1])
            end
        end
    end
end
local out = {copied, deleted, nunknown}
for _, n in ipairs(names) do
    out[#out + 1] = n
end
return out
