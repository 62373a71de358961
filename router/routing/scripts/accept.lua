-- An agent accepted an offer: the contact is answered (the 30-second clock stops).
-- Arguments: state.AcceptArgs.
local aid, oid, cid = A.agent_id, A.offer_id, A.contact_id
local c = contact(cid)
if not c or c.st ~= CS_OFFERED or c.ag ~= aid or c.of ~= oid then
  return {T_stale(cid, aid, oid, c and c.st or 'unknown')}
end
local waited = waited_of(c, NOW)
local within = waited <= tonumber(c.tg)
c.st, c.ans = CS_ANSWERED, NOW
cdirty(cid)
redis.call('ZREM', K_OFFERS, cid)
local a = agent(aid)
if a then
  remove_offer_of(a, cid)
  adirty(aid)
end
if c.cu and c.cu ~= '' then  -- the customer's last agent (the preferred-agent history)
  redis.call('HSET', K_LAST_AGENT, c.cu, aid .. '|' .. int(NOW))
  redis.call('ZADD', K_LAST_AGENT_TIMES, int(NOW), c.cu)
end
learn_pace(c, NOW)  -- what a place in line costs now (the estimated wait's pace)
local w = math.max(waited, 0)
local w1 = 0
if within then w1 = 1 end
stat('answered')
stat('answered_within_target', w1)
stat('wait_sum_ms', w)
unanswered_remove(cid, c)
sla_count(c.qn, {'answered', 1, 'answered_within_target', w1, 'wait_sum_ms', w}, w)
return {T_answered(cid, aid, c.ch, c.ln, tonumber(c.rg), waited, tonumber(c.pri), oid, within)}
