-- A routing request (escalation): place the contact in its lane, open the rings its wait (or an
-- empty ring) allows, offer it at once to the best free agent or queue it. Idempotent by
-- contact id (a re-delivered request finds it queued or further: duplicate). Arguments:
-- state.RequestArgs.
local cid = A.contact_id
local c = contact(cid)
local st = c and c.st
if st and st ~= CS_CONTAINED and st ~= CS_ESCALATING then
  return {T_duplicate(cid, '', st)}
end
if st == CS_CONTAINED then  -- a bot-closed contact came back: it is not finished any more
  stat('contained', -1)
  redis.call('ZREM', K_RETAINED, cid)
end
if st == CS_ESCALATING then stat('escalating', -1) end
if not c then c = new_contact(cid) end
c.st, c.ch, c.ln, c.cls, c.score, c.esc = CS_QUEUED, A.channel, A.lane, A.service_class, A.score, A.escalated_at
c.pri, c.tg, c.wt, c.rd, c.rp, c.xs = A.priority, A.target_ms, A.weight, A.ring_delays, A.ring_pools, A.extra_skills
c.qn, c.sg, c.rg, c.ag, c.of, c.att, c.n = A.queue, A.strategy, 0, '', '', 0, 0
cdirty(cid)
if A.context ~= '' then redis.call('HSET', K_CONTEXT, cid, A.context) end
stat('escalated')
unanswered_add(cid, c)
sla_count(c.qn, {'offered', 1})
local out = {}
local waited = waited_of(c, NOW)
local rg, skipped = open_ring(c.rp, c.rd, waited)
if rg > 0 then relax(cid, c, rg, skipped, waited, out) end
if not match_contact(cid, c, NOW, A.scan_limit, out) then
  enqueue(cid, c)
  out[#out + 1] = T_queued(cid, '', c.ch, c.ln, rg, waited, tonumber(c.pri), next_seq(cid, c), A.reason)
end
return out
