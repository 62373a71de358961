-- The agent finished a contact: capacity frees and the agent takes the most urgent visible
-- contact. ARGV: aid, cid, now, offer_timeout_ms, scan_limit, retention_s.
local aid, cid = ARGV[1], ARGV[2]
local now, timeout_ms, limit, retention = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local st, ag, ch, ln, rg, esc = unpack(redis.call('HMGET', ckey(cid), 'st', 'ag', 'ch', 'ln', 'rg', 'esc'))
if st ~= 'answered' or ag ~= aid then
  return {row('stale', cid, aid, '', '', '', 0, 0, 0, 0, st or 'unknown')}
end
finish(cid, 'done', retention)
give_back(aid, ch)
stat('completed')
local out = {row('completed', cid, aid, '', ch, ln, tonumber(rg), now - tonumber(esc))}
match_agent(aid, now, timeout_ms, limit, out)
return out
