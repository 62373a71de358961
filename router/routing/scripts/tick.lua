-- Time-driven step of one domain: offers whose answer time ran out are withdrawn (the agent
-- becomes what on_no_answer says; redirect on no answer), and waiting contacts whose next ring
-- opened are relaxed and offered to the wider pool.
-- ARGV: now, offer_timeout_ms, scan_limit, max per step, on_no_answer.
local now, timeout_ms, limit, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local after = ARGV[5]
local out = {}
for _, cid in ipairs(redis.call('ZRANGEBYSCORE', OX, '-inf', now, 'LIMIT', 0, max)) do
  local aid, oid = unpack(redis.call('HMGET', ckey(cid), 'ag', 'of'))
  unanswered(cid, aid, oid, 'expired', 'no_answer', after, now, timeout_ms, limit, out)
end
for _, cid in ipairs(redis.call('ZRANGEBYSCORE', RX, '-inf', now, 'LIMIT', 0, max)) do
  local c = ckey(cid)
  local st, ln, ch, rg, esc, pri = unpack(redis.call('HMGET', c, 'st', 'ln', 'ch', 'rg', 'esc',
                                                    'pri'))
  if st ~= 'queued' then
    redis.call('ZREM', RX, cid)
  else
    local waited = now - tonumber(esc)
    local nrg, skipped = open_ring(ring_pools(c), ring_delays(c), waited)
    dequeue(cid)
    if nrg > tonumber(rg) then relax(cid, nrg, skipped, ch, ln, waited, pri, out) end
    enqueue(cid)
    match_contact(cid, now, timeout_ms, limit, out, nil, true)
  end
end
return out
