-- Time-driven step of one domain, bounded per call: offers whose answer time ran out are
-- withdrawn (the agent becomes what on_no_answer says; redirect on no answer); waiting
-- contacts whose next ring opened are relaxed and offered to the wider pool (a preferred ring
-- that ended: the normal rings); customers' last agents past the history window are
-- forgotten; matches that ran
-- out of their scan budget are finished; finished contacts past retention are forgotten; and
-- outbox entries nobody deleted within the lease (the worker that made them died before Kafka
-- had them) are returned to be sent again; and the minute that is final now is rolled into
-- its hour's SLA bucket (sla_roll). Arguments: state.TickArgs.
sla_roll()
local out = {}
local max, limit = A.max_per_step, A.scan_limit
for _, cid in ipairs(redis.call('ZRANGEBYSCORE', K_OFFERS, '-inf', NOW, 'LIMIT', 0, max)) do
  local c = contact(cid)
  if c and c.st == CS_OFFERED then
    unanswered(cid, c, c.ag, c.of, 'expired', 'no_answer', A.on_no_answer, NOW, limit, out)
  else
    redis.call('ZREM', K_OFFERS, cid)
  end
end
for _, cid in ipairs(redis.call('ZRANGEBYSCORE', K_RINGS, '-inf', NOW, 'LIMIT', 0, max)) do
  local c = contact(cid)
  if not c or c.st ~= CS_QUEUED then
    redis.call('ZREM', K_RINGS, cid)
  elseif c.pa and c.pa ~= '' then  -- its preferred ring is over: the normal rings now
    end_preferred(cid, c, 'preferred_ring_over', NOW, limit, out)
  else
    local waited = waited_of(c, NOW)
    local nrg, skipped = open_ring(c.rp, c.rd, waited)
    dequeue(cid, c)
    if nrg > tonumber(c.rg) then relax(cid, c, nrg, skipped, waited, out) end
    enqueue(cid, c)
    match_contact(cid, c, NOW, limit, out, nil, true)
  end
end
-- Matches cut short by the scan limit: look again with this step's budget.
local budget = A.pending_budget
for _, cid in ipairs(redis.call('ZRANGE', K_PENDING, 0, max - 1)) do
  if budget <= 0 then break end
  local c = contact(cid)
  redis.call('ZREM', K_PENDING, cid)
  if c and c.st == CS_QUEUED then
    match_contact(cid, c, NOW, budget, out, nil, true)
    budget = budget - limit
  end
end
for _, cid in ipairs(redis.call('ZRANGEBYSCORE', K_RETAINED, '-inf', NOW, 'LIMIT', 0, A.purge_max)) do
  redis.call('ZREM', K_RETAINED, cid)
  local c = contact(cid)
  if c and (c.st == CS_DONE or c.st == CS_ABANDONED or c.st == CS_CONTAINED) then
    forget_contact(cid)
  end
end
-- Waiting customers are told their position and estimated wait again every wait_update_ms,
-- sooner when the estimate moved by more than wait_threshold_ms (looked at every quarter).
if A.wait_update_ms > 0 then
  local check = math.max(1000, math.floor(A.wait_update_ms / 4))
  for _, cid in ipairs(redis.call('ZRANGEBYSCORE', K_WAIT_NOTICES, '-inf', NOW, 'LIMIT', 0, max)) do
    local c = contact(cid)
    if not c or c.st ~= CS_QUEUED or (c.pa and c.pa ~= '') then
      redis.call('ZREM', K_WAIT_NOTICES, cid)
    else
      local position = position_of(cid, c)
      local estimate, ready = estimate_of(c, position)
      if NOW - (tonumber(c.wa) or 0) >= A.wait_update_ms
          or math.abs(estimate - (tonumber(c.we) or 0)) > A.wait_threshold_ms then
        tell_wait(cid, c, NOW, out, check, position, estimate, ready)
      else
        redis.call('ZADD', K_WAIT_NOTICES, int(NOW + check), cid)
      end
    end
  end
end
-- The customers' last agents answered longer ago than the history window: forgotten.
for _, cu in ipairs(redis.call('ZRANGEBYSCORE', K_LAST_AGENT_TIMES, '-inf', NOW - A.history_ms,
                               'LIMIT', 0, A.purge_max)) do
  redis.call('ZREM', K_LAST_AGENT_TIMES, cu)
  redis.call('HDEL', K_LAST_AGENT, cu)
end
for _, eid in ipairs(redis.call('ZRANGEBYSCORE', K_OUTBOX_TIMES, '-inf', NOW - A.outbox_lease_ms,
                                'LIMIT', 0, max)) do
  local kept = redis.call('HGET', K_OUTBOX, eid)
  if kept then
    redis.call('ZADD', K_OUTBOX_TIMES, int(NOW), eid)  -- leased again: one worker re-sends it
    EXTRA_ENTRIES[#EXTRA_ENTRIES + 1] = {eid, kept}
  else
    redis.call('ZREM', K_OUTBOX_TIMES, eid)
  end
end
return out
