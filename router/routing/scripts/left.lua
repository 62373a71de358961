-- The customer left. Waiting or offered contacts are abandoned (an offer is rescinded and the
-- agent takes other work); answered or finished contacts ignore it. Arguments: state.LeftArgs.
local cid = A.contact_id
local c = contact(cid)
local st = c and c.st
if c and c.cb and c.cb ~= '' and (st == CS_QUEUED or st == CS_OFFERED) then
  return {T_stale(cid, '', '', st)}  -- a callback: the customer is away on purpose
end
local out = {}
local ag = c and c.ag or ''
if st == CS_ESCALATING then
  stat('escalating', -1)
elseif st == CS_QUEUED then
  dequeue(cid, c)
elseif st == CS_OFFERED then
  local a = agent(ag)
  release_offer(cid, c, ag, a)
  stat('rescinded')
  out[#out + 1] = T_rescinded(cid, ag, c.ch, c.ln, tonumber(c.rg), waited_of(c, NOW),
                              tonumber(c.pri), c.of, 'customer_left')
else
  return {T_stale(cid, '', '', st or 'unknown')}
end
local waited = 0
if c.esc then waited = waited_of(c, NOW) end
finish(cid, c, CS_ABANDONED, A.retention_s, NOW)
stat('abandoned')
local short = 0
if c.esc and waited <= A.short_abandon_ms then
  stat('short_abandoned')
  short = 1
end
-- A contact that left while escalating never reached a queue (the routing stage had not seen
-- its request): the domain's books count it, no queue's service level does.
if st ~= CS_ESCALATING then
  unanswered_remove(cid, c)
  sla_count(c.qn, {'abandoned', 1, 'short_abandoned', short})
end
out[#out + 1] = T_abandoned(cid, '', c.ch or '', c.ln or '', tonumber(c.rg or 0), waited,
                            tonumber(c.pri or 0), 'customer_left')
if st == CS_OFFERED then
  local a = agent(ag)
  if a then match_agent(ag, a, NOW, A.scan_limit, out) end
end
return out
