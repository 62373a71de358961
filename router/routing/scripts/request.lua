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
c.cu, c.pa, c.pu, c.pf, c.wa, c.we, c.wk = A.customer_id, '', 0, '', 0, 0, 0
c.wf, c.wp = 0, 0  -- not told a position yet (the lane's pace learns from the first one)
local out = {}
local waited = waited_of(c, NOW)
-- The preferred agent: the one the request names, else the customer's last agent within the
-- history window. Its ring (only that agent, for preferred_ring_ms from now) is used if
-- the agent is logged in and not offline and serves the lane; else skipped at no wait. Either
-- way audited (T_preferred: used or why not).
local pref, source = A.preferred_agent, 'named'
if pref == '' and A.customer_id ~= '' and A.history_ms > 0 then
  local last = redis.call('HGET', K_LAST_AGENT, A.customer_id)
  local who, at = string.match(last or '', '^(.+)|(%d+)$')
  if who and NOW - tonumber(at) <= A.history_ms then pref, source = who, 'last_agent' end
end
if pref ~= '' then
  local why = 'used'
  local pa = agent(pref)
  if A.preferred_ring_ms <= 0 then
    why = 'disabled'
  elseif redis.call('SISMEMBER', K_SEATED, pref) == 0 or not pa then
    why = 'absent'
  elseif pa.st == AS_OFFLINE then
    why = 'offline'
  elseif not profile(pref).serves[c.ln] then
    why = 'not_serving'
  end
  c.pf = pref
  out[#out + 1] = T_preferred(cid, pref, c.ch, c.ln, 0, waited, tonumber(c.pri), why == 'used',
                              source, why)
  if why == 'used' then c.pa, c.pu = pref, NOW + A.preferred_ring_ms end
end
local rg = 0
if c.pa == '' then
  local skipped
  rg, skipped = open_ring(c.rp, c.rd, waited)
  if rg > 0 then relax(cid, c, rg, skipped, waited, out) end
end
if not match_contact(cid, c, NOW, A.scan_limit, out) then
  enqueue(cid, c)
  local why = A.reason
  if c.pa ~= '' and why == '' then why = 'preferred_agent' end
  out[#out + 1] = T_queued(cid, '', c.ch, c.ln, rg, waited, tonumber(c.pri), next_seq(cid, c), why)
  if c.pa == '' then  -- the customer hears their position and estimated wait
    local position = position_of(cid, c)
    local estimate, ready = estimate_of(c, position)
    tell_wait(cid, c, NOW, out, A.wait_notice_ms, position, estimate, ready)
  end
end
return out
