-- A routing request (escalation): place the contact in its lane, open the rings its wait (or an
-- empty ring) allows, offer it at once to the best free agent or queue it. Idempotent by
-- contact id. ARGV: cid, channel, lane, class, score, escalated_at, priority, target_ms, weight,
-- ring delays "0,10000,...", ring pools "p0;p1;...", extra skills "a=1", queue, strategy, now,
-- offer_timeout_ms, scan_limit.
local cid, ch, ln, cls, score, esc, pri = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local tg, wt, rd, rp, xs, qn, sg = ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local now, timeout_ms, limit = tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17])
local c = ckey(cid)
local st = redis.call('HGET', c, 'st')
if st and st ~= 'contained' and st ~= 'escalating' then
  return {row('duplicate', cid, '', '', '', '', 0, 0, 0, 0, st)}
end
if st == 'contained' then  -- a bot-closed contact came back
  stat('contained', -1)
  redis.call('PERSIST', c)
end
if st == 'escalating' then stat('escalating', -1) end
redis.call('HSET', c, 'st', 'queued', 'ch', ch, 'ln', ln, 'cls', cls, 'score', score, 'esc', esc,
           'pri', pri, 'tg', tg, 'wt', wt, 'rd', rd, 'rp', rp, 'xs', xs, 'qn', qn, 'sg', sg, 'rg', 0, 'ag', '', 'of', '')
stat('escalated')
unanswered_add(cid, qn, cls, tonumber(esc), tg)
sla_count(qn, now, {'offered', 1})
local out = {}
local waited = now - tonumber(esc)
local rg, skipped = open_ring(split(rp, ';'), parse_delays(rd), waited)
if rg > 0 then relax(cid, rg, skipped, ch, ln, waited, pri, out) end
if not match_contact(cid, now, timeout_ms, limit, out) then
  enqueue(cid)
  out[#out + 1] = row('queued', cid, '', '', ch, ln, rg, waited, 0, tonumber(pri), '')
end
return out
