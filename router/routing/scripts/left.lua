-- The customer left. Waiting or offered contacts are abandoned (an offer is rescinded and the
-- agent takes other work); answered or finished contacts ignore it. ARGV: cid, now,
-- short_abandon_ms, offer_timeout_ms, scan_limit, retention_s.
local cid = ARGV[1]
local now, short_ms, timeout_ms, limit, retention = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local st, ag, of, esc, ch, ln, rg, pri, qn, cls = unpack(redis.call('HMGET', ckey(cid), 'st', 'ag',
                                                          'of', 'esc', 'ch', 'ln', 'rg', 'pri',
                                                          'qn', 'cls'))
local out = {}
if st == 'escalating' then
  stat('escalating', -1)
elseif st == 'queued' then
  dequeue(cid)
elseif st == 'offered' then
  release_offer(cid, ag)
  stat('rescinded')
  out[#out + 1] = row('rescinded', cid, ag, of, ch, ln, tonumber(rg), now - tonumber(esc), 0,
                      tonumber(pri), 'customer_left')
else
  return {row('stale', cid, '', '', '', '', 0, 0, 0, 0, st or 'unknown')}
end
local waited = 0
if esc then waited = now - tonumber(esc) end
finish(cid, 'abandoned', retention)
stat('abandoned')
local short = 0
if esc and waited <= short_ms then
  stat('short_abandoned')
  short = 1
end
-- A contact that left while escalating never reached a queue (the routing stage had not seen
-- its request): the domain's books count it, no queue's service level does.
if st ~= 'escalating' then
  unanswered_remove(cid, qn, cls)
  sla_count(qn, now, {'abandoned', 1, 'short_abandoned', short})
end
out[#out + 1] = row('abandoned', cid, '', '', ch, ln, tonumber(rg or '0'), waited, 0,
                    tonumber(pri or '0'), 'customer_left')
if st == 'offered' then
  match_agent(ag, now, timeout_ms, limit, out)
end
return out
