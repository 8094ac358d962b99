-- prelude.lua: prepended to every script in lua/ at build time
-- (scripts/embed-lua.cmake), so the phase rules live in one place.
--
-- Every queue script takes the arguments of lua/contract.txt, named by the
-- lines generated before this file: the keys PHASE_KEY, STATS_KEY and
-- EVSEQ_KEY; PIN, the process's pinned phase ('' to follow the stored one),
-- and NS, the namespace; the script's own arguments, ARGV[3..TPL]; the key
-- map's templates, old and new of each role (RI[role] is the offset of the
-- pair), with the namespace where they are keys; EVBASE, this call's event
-- id base: events get ids BASE.1, BASE.2... (random, from the client: an
-- INCR per event would be one more write to propagate).
--
-- Key names of one step are derived here from the templates, because claim
-- and reap only learn the ids inside the script. Passing the templates as
-- arguments spares every call a parse of the map. Every key of a namespace
-- shares its prefix (a hash tag when sharded), so the scripts stay in one slot.
-- Errors are raised as 'STEPQ_<CODE> text'; the C side maps the code.

-- redis.call, looked up once: a global and a field read per call add up over
-- the ten or so calls a step makes.
local call = redis.call
-- redis.pcall, for the first read of a step's record in a batch: on a key of
-- another type (damaged data) it returns {err = ...} instead of raising, so
-- that one step fails alone. Raising would abort the script after the
-- batch's earlier steps were written but before its collection writes,
-- leaving them half done. After a read of the record succeeded, writes to
-- the same key cannot fail for its type.
local try = redis.pcall

local function raise(code, msg)
    error({err = 'STEPQ_' .. code .. ' ' .. msg})
end

local PHASE = PIN
if PHASE == nil or PHASE == '' then
    PHASE = call('HGET', PHASE_KEY, 'phase') or 'job'
end
if PHASE ~= 'job' and PHASE ~= 'dual-write' and PHASE ~= 'dual-read' and
    PHASE ~= 'step-primary' and PHASE ~= 'step' then
    raise('INVALID', "stored phase '" .. tostring(PHASE) .. "' is unknown; set it with 'stepq migrate phase'")
end

-- Which keyspaces this phase writes and reads (docs/keymap.md, "Phases").
local W_OLD = PHASE ~= 'step'
local W_NEW = PHASE ~= 'job'
local RSIDE = (PHASE == 'job' or PHASE == 'dual-write') and 1 or 2
local FALLBACK = PHASE == 'dual-read' or PHASE == 'step-primary'
local LAZY = PHASE == 'dual-read'
-- The sides written, as a range (a numeric for costs no iterator calls).
local S0, S1 = W_OLD and 1 or 2, W_NEW and 2 or 1

-- How many events this call has emitted (the n of BASE.n).
local EVN = 0

-- The name of `role` on `side` (1 old, 2 new) for `id`. A template is split
-- around its {id} once per call; a name is then one concatenation.
local SPLIT = {}
local function key(role, side, id)
    local i = TPL + RI[role] + side
    local sp = SPLIT[i]
    if not sp then
        local t = ARGV[i]
        local s, e = string.find(t, '{id}', 1, true)
        sp = s and {string.sub(t, 1, s - 1), string.sub(t, e + 1)} or {t}
        SPLIT[i] = sp
    end
    if id and sp[2] then
        return sp[1] .. id .. sp[2]
    end
    return sp[1]
end

-- Keys that the rename leaves alone.
local function wkey(w, suffix)
    return NS .. 'worker:' .. w .. (suffix or '')
end
local WORKERS_ACTIVE, WORKERS_IDLE = NS .. 'workers:active', NS .. 'workers:idle'
local WORKER_EVENTS = 'worker_events'

-- The time in ms, as a string: Lua numbers become strings through printf
-- in every call() and cjson.encode(), which profiling showed to be a
-- tenth of a queue script's cost, so NOW is built from TIME's digits.
local NOW
do
    local t = call('TIME')
    local us = t[2]
    NOW = t[1] .. string.sub(string.rep('0', 6 - #us) .. us, 1, 3)
end

-- A whole number as text without printf: Lua's tostring (and a number in
-- a concatenation) is a sprintf of a double, about 2,000 instructions
-- (callgrind); a digit table costs a tenth of that. Anything but a whole
-- number >= 0 goes to tostring.
local DIGITS = {[0] = '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'}
local function itoa(n)
    if n < 10 and DIGITS[n] then
        return DIGITS[n]
    end
    if n < 0 or n % 1 ~= 0 or n >= 1e15 then
        return tostring(n)
    end
    local s = ''
    while n > 0 do
        local d = n % 10
        s = DIGITS[d] .. s
        n = (n - d) / 10
    end
    return s
end

local function stat(name)
    call('HINCRBY', STATS_KEY, name, 1)
end

-- Invariant 1 (design.md): before a dual write touches a key whose twin is
-- missing, copy the whole existing key over (all fields, even unknown ones,
-- and its TTL), so the write never leaves a partial record behind. One
-- EXISTS of both names settles the common cases (both there, or neither);
-- a key made whole once in this call is not looked at again.
local WHOLE = {}
local function twin(role, id)
    if not (W_OLD and W_NEW) then
        return
    end
    local o, n = key(role, 1, id), key(role, 2, id)
    if WHOLE[o] then
        return
    end
    WHOLE[o] = true
    if call('EXISTS', o, n) ~= 1 then
        return
    end
    if call('EXISTS', o) == 1 then
        call('COPY', o, n)
    else
        call('COPY', n, o)
    end
end

-- Returns the side to read `role` of `id` from, or nil when it is nowhere
-- this phase reads. In dual-read a record found only under the old pattern is
-- copied over (lazy migration); in step-primary it is counted as a miss.
local function locate(role, id)
    if call('EXISTS', key(role, RSIDE, id)) == 1 then
        return RSIDE
    end
    if not FALLBACK or call('EXISTS', key(role, 1, id)) == 0 then
        return nil
    end
    if LAZY then
        stat('fallback_reads')
        call('COPY', key(role, 1, id), key(role, 2, id))
        stat('lazy_migrations')
        return 2
    end
    stat('primary_misses')
    return 1
end

local function hset(role, id, ...)
    twin(role, id)
    for s = S0, S1 do
        call('HSET', key(role, s, id), ...)
    end
end

-- Writes fields to `k`, the key of `role` for `id` on `side` (where its
-- record was read), with the TTL `ttl` (ms) when given; in the dual phases
-- the other side then becomes a COPY of it (REPLACE), which carries the TTL
-- too. A whole record is copied, so no partial one is left (invariant 1)
-- without an EXISTS first, and a hash copied is one memcpy, far cheaper
-- than the same HSET again (callgrind). The side read is the phase's
-- truth: a twin that differed is made equal to it.
local function hset_at(k, side, role, id, ttl, ...)
    call('HSET', k, ...)
    if ttl then
        call('PEXPIRE', k, ttl)
    end
    for s = S0, S1 do
        if s ~= side then
            call('COPY', k, key(role, s, id), 'REPLACE')
        end
    end
end

-- A command on the collection `role` on every side this phase writes.
local function coll(cmd, role, id, ...)
    for s = S0, S1 do
        call(cmd, key(role, s, id), ...)
    end
end

-- Collection writes of a batch go out as one variadic command per key at
-- flush(): a call costs about what a member's own work costs, so a batch of
-- 50 steps saves about six calls a step. batch(cmd, role, owner) makes one
-- per call and key and returns its member list, which the caller appends
-- to (for ZADD: a score, then the member); flush() sends it to every side
-- the phase writes. Only for writes that nothing in the same call reads
-- before the flush.
local BATCHES = {}
local function batch(cmd, role, owner)
    local members = {}
    BATCHES[#BATCHES + 1] = {cmd, role, owner, members}
    return members
end

local function flush()
    for _, b in ipairs(BATCHES) do
        local m = b[4]
        if #m > 0 then
            for s = S0, S1 do
                call(b[1], key(b[2], s, b[3]), unpack(m))
            end
            for j = #m, 1, -1 do
                m[j] = nil
            end
        end
    end
end

-- The retention TTL on a step's progress hashes. Most steps report no
-- progress: in the dual phases one EXISTS of both names spares two
-- PEXPIREs of keys that are not there. With one side, the PEXPIRE is
-- called directly: through coll() it cost 1.6k instructions more a
-- lifecycle step (callgrind), which complete pays for every step.
local function pexpire_progress(id, ms)
    if S0 == S1 then
        call('PEXPIRE', key('progress', S0, id), ms)
    elseif call('EXISTS', key('progress', 1, id), key('progress', 2, id)) > 0 then
        coll('PEXPIRE', 'progress', id, ms)
    end
end

-- A whole number as JSON text: the stored string itself when it is one,
-- else `default` (records of the old system may hold anything).
local function num(v, default)
    if v and string.find(v, '^%-?%d+$') then
        return v
    end
    return default
end

-- A JSON string, or null. cjson.encode is the fast way: a Lua pattern that
-- would spare it for plain names costs four times as much (measured).
local function js(v)
    if v == nil or v == false then
        return 'null'
    end
    return cjson.encode(v)
end

-- Publishes a lifecycle event to the channel(s) of the phase, with one event
-- id for all of them so that a subscriber of both can drop the duplicate.
-- `id` is the step id; `raw` says it most likely needs no JSON escaping
-- (an id from ARGV: stepq's own are UUIDs), which one find confirms: a step
-- of the old system may have any id (STEPQ_STEP_ID_MAX), quotes too;
-- anything else is encoded. e1..e4 are more JSON
-- members, each starting with a comma, or nil. The message is one
-- concatenation: a cjson.encode of a table per event cost more than the
-- writes, and every intermediate string is one more to hash and collect.
local EVID = ',"id":"' .. EVBASE .. '.'
local EVTAIL = '","ts":' .. NOW .. ',"phase":"' .. PHASE .. '"}'
local CHAN1, CHAN2 = W_OLD and key('events', 1), W_NEW and key('events', 2)
local function emit(etype, id, raw, e1, e2, e3, e4)
    EVN = EVN + 1
    local lo = EVN % 10
    local hi = (EVN - lo) / 10
    local q = '"'
    if not raw or string.find(id, '[^0-9A-Za-z_.%-]') then
        id, q = js(id), ''
    end
    local msg = '{"type":"' .. etype .. '","step":' .. q .. id .. q .. (e1 or '') .. (e2 or '') ..
        (e3 or '') .. (e4 or '') .. EVID .. (hi > 0 and itoa(hi) or '') .. DIGITS[lo] .. EVTAIL
    if CHAN1 then
        call('PUBLISH', CHAN1, msg)
    end
    if CHAN2 then
        call('PUBLISH', CHAN2, msg)
    end
end

local function worker_event(ev)
    ev.ts = tonumber(NOW)
    call('PUBLISH', WORKER_EVENTS, cjson.encode(ev))
end

-- A worker with no step left goes from workers:active back to workers:idle.
local function worker_maybe_idle(w)
    if not w or w == '' then
        return
    end
    if call('SCARD', key('worker_steps', RSIDE, w)) == 0 and
        call('SREM', WORKERS_ACTIVE, w) == 1 then
        call('SADD', WORKERS_IDLE, w)
    end
end

-- Ends an attempt that did not succeed: back to pending while attempts are
-- left, else into the failed set. Returns 1 when the step failed for good.
local function retry_or_fail(id, side, w, event, errtext, retention)
    local k = key('step', side, id)
    local v = call('HMGET', k, 'attempts', 'max_attempts', 'priority')
    local attempts, maxa = tonumber(v[1]) or 0, tonumber(v[2]) or 3
    local prio = num(v[3], '0')
    local attempt, jerr = num(v[1], '0'), js(errtext)
    coll('SREM', 'active', nil, id)
    if w and w ~= '' then
        coll('SREM', 'worker_steps', w, id)
    end
    if attempts < maxa then
        hset_at(k, side, 'step', id, nil, 'status', 'pending', 'error', errtext, 'updated_at', NOW)
        coll('ZADD', 'pending', nil, prio, id)
        emit(event, id, false, ',"attempt":', attempt, ',"error":', jerr)
        worker_maybe_idle(w)
        return 0
    end
    hset_at(k, side, 'step', id, retention, 'status', 'failed', 'error', errtext, 'updated_at', NOW,
        'finished_at', NOW)
    -- The set gets no TTL: renewed at every failure it would never expire,
    -- and ids whose record did would stay listed; prune.lua drops them.
    coll('SADD', 'failed', nil, id)
    pexpire_progress(id, retention)
    emit('failed', id, false, ',"attempt":', attempt, ',"error":', jerr)
    worker_maybe_idle(w)
    return 1
end

-- Finds the step of a token-checked call: returns its side, its worker and
-- the key of its record there, or raises; with `soft`, returns nil, nil and
-- the error text instead.
local function held_step(id, token, soft)
    local side, k = RSIDE, key('step', RSIDE, id)
    local v = try('HMGET', k, 'status', 'token', 'worker')
    if not v.err and not v[1] and not v[2] then
        -- Not where this phase reads first (or a record with neither field).
        side = locate('step', id)
        if side then
            k = key('step', side, id)
            v = try('HMGET', k, 'status', 'token', 'worker')
        end
    end
    local err
    if v.err then
        err = 'CONFLICT step \'' .. id .. '\' cannot be held: its key is not a step record (' ..
            v.err .. ')'
    elseif not side then
        err = 'NOTFOUND step \'' .. id .. '\' does not exist'
    elseif v[1] ~= 'active' or v[2] ~= token then
        err = 'CONFLICT step \'' .. id .. '\' is not held with this token (status ' ..
            tostring(v[1] or 'unknown') .. '); it was reclaimed, cancelled or finished'
    end
    if err then
        if soft then
            return nil, nil, 'STEPQ_' .. err
        end
        error({err = 'STEPQ_' .. err})
    end
    return side, v[3], k
end
