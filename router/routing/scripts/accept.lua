-- An agent accepted an offer: the contact is answered (the 30-second clock stops).
-- ARGV: aid, oid, cid, now.
local aid, oid, cid, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local c = ckey(cid)
local st, ag, of, esc, tg, ch, ln, rg, pri, qn, cls = unpack(redis.call('HMGET', c, 'st', 'ag', 'of',
                                                   'esc', 'tg', 'ch', 'ln', 'rg', 'pri', 'qn', 'cls'))
if st ~= 'offered' or ag ~= aid or of ~= oid then
  return {row('stale', cid, aid, oid, '', '', 0, 0, 0, 0, st or 'unknown')}
end
local waited = now - tonumber(esc)
local within = 0
if waited <= tonumber(tg) then within = 1 end
redis.call('HSET', c, 'st', 'answered', 'ans', now)
redis.call('ZREM', OX, cid)
redis.call('SREM', offers_of(aid), cid)
stat('answered')
stat('answered_within_target', within)
stat('wait_sum_ms', waited)
unanswered_remove(cid, qn, cls)
local w = math.max(waited, 0)
sla_count(qn, now, {'answered', 1, 'answered_within_target', within, 'wait_sum_ms', w}, w)
return {row('answered', cid, aid, oid, ch, ln, tonumber(rg), waited, within, tonumber(pri))}
