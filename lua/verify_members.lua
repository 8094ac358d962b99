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
-- asked), then the members that differ}.
local a, b, t, tol = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local n, s1, s2 = 0, 0, 0
local bad = {}
for i = 4, #ARGV do
    local m = ARGV[i]
    local e
    if t == 'set' then
        if redis.call('SISMEMBER', a, m) == 1 then
            e = m
            if redis.call('SISMEMBER', b, m) == 0 then
                bad[#bad + 1] = m
            end
        end
    else
        local sa = redis.call('ZSCORE', a, m)
        if sa then
            e = #m .. ':' .. m .. sa
            if redis.call('ZSCORE', b, m) ~= sa then
                bad[#bad + 1] = m
            end
        end
    end
    if e then
        n = n + 1
        local h = redis.sha1hex(e)
        s1 = (s1 + tonumber(string.sub(h, 1, 8), 16)) % 4294967296
        s2 = (s2 + tonumber(string.sub(h, 9, 16), 16)) % 4294967296
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
