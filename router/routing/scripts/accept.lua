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
  redis.call('HSET', K_LAST_AGENT, c.cu, aid .. '|' .. NOW)
  redis.call('ZADD', K_LAST_AGENT_TIMES, NOW, c.cu)
end
-- The lane's pace: a moving average of the time between answers while the lane had a line
-- (the estimated wait's). A gap after an answer that left nobody waiting holds idle time (it
-- waited for arrivals, not for agents): it only restarts the clock.
local pace = redis.call('HGET', K_LANE_PACE, c.ln)
local gap, last, busy = string.match(pace or '', '^([-%d.]+)|(%d+)|?(%d*)$')
local mean = tonumber(gap) or -1
if last and busy ~= '0' then
  local since = math.min(math.max(NOW - tonumber(last), 0), 60000)
  if mean < 0 then mean = since else mean = mean * 0.9 + since * 0.1 end
end
local line = 0
if lane_has_line(c.ln) then line = 1 end
redis.call('HSET', K_LANE_PACE, c.ln, string.format('%.1f|%d|%d', mean, NOW, line))
local w = math.max(waited, 0)
local w1 = 0
if within then w1 = 1 end
stat('answered')
stat('answered_within_target', w1)
stat('wait_sum_ms', w)
unanswered_remove(cid, c)
sla_count(c.qn, {'answered', 1, 'answered_within_target', w1, 'wait_sum_ms', w}, w)
return {T_answered(cid, aid, c.ch, c.ln, tonumber(c.rg), waited, tonumber(c.pri), oid, within)}
