-- verify_members.lua
-- Compares one chunk of a large set or zset with its twin, member by member
-- (the verify of big collections; the caller reads the chunk with
-- SSCAN/ZSCAN). A member no longer in the first key is skipped (it left
-- meanwhile); one absent from the twin, or with another score, is returned.
-- With ARGV[3] = '1' it also compares the sizes and the expiry of the two.
-- KEYS[1] the key verified  KEYS[2] its twin
-- ARGV[1] 'set' or 'zset'  ARGV[2] TTL tolerance ms  ARGV[3] '1': compare
-- sizes and expiry too  ARGV[4..] the members
-- Reply: {members compared, lane1, lane2 (of the members compared, as in
-- verify_batch), size verdict ('equal', 'different', 'ttl' or '' when not
-- asked; 'different' in any chunk when a key no longer has type ARGV[1]),
-- then the members that differ}.
local a, b, t, tol = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local n, s1, s2 = 0, 0, 0
local bad = {}
-- verify_batch saw both keys of type t, but a chunk comes later: a key
-- that changed type meanwhile is a difference (the re-check decides), not
-- a WRONGTYPE that would end the verify.
if redis.call('TYPE', a).ok ~= t or redis.call('TYPE', b).ok ~= t then
    return {'0', '0', '0', 'different'}
end
-- Two calls a chunk (SMISMEMBER/ZMSCORE on each key), not two a member: a
-- redis.call() costs more than the member work it does.
local ms = {unpack(ARGV, 4)}
if #ms > 0 then
    local cmd = t == 'set' and 'SMISMEMBER' or 'ZMSCORE'
    local ina, inb = redis.call(cmd, a, unpack(ms)), redis.call(cmd, b, unpack(ms))
    for i, m in ipairs(ms) do
        local e
        if t == 'set' then
            if ina[i] == 1 then
                e = m
                if inb[i] == 0 then
                    bad[#bad + 1] = m
                end
            end
        elseif ina[i] then
            e = #m .. ':' .. m .. ina[i]
            if inb[i] ~= ina[i] then
                bad[#bad + 1] = m
            end
        end
        if e then
            n = n + 1
            local h = redis.sha1hex(e)
            s1 = (s1 + tonumber(string.sub(h, 1, 8), 16)) % 4294967296
            s2 = (s2 + tonumber(string.sub(h, 9, 16), 16)) % 4294967296
        end
    end
end
local verdict = ''
if ARGV[3] == '1' then
    local card = t == 'set' and 'SCARD' or 'ZCARD'
    verdict = 'equal'
    local ea, eb = redis.call('PEXPIRETIME', a), redis.call('PEXPIRETIME', b)
    if redis.call(card, a) ~= redis.call(card, b) then
        verdict = 'different'
    elseif (ea == -1) ~= (eb == -1) or (ea > 0 and math.abs(ea - eb) > tol) then
        verdict = 'ttl'
    end
end
local out = {tostring(n), tostring(s1), tostring(s2), verdict}
for _, m in ipairs(bad) do
    out[#out + 1] = m
end
return out
