-- A routing request (escalation). ARGV: cid, channel, skills, priority, score, escalated_at,
-- now, offer_timeout_ms, scan_limit. Idempotent by contact id.
local cid, ch, sk, pri, score, esc = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now, timeout_ms, limit = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local out = {}
local st = redis.call('HGET', ckey(cid), 'st')
if st and st ~= 'contained' and st ~= 'escalating' then
  return {{'duplicate', cid, st}}
end
if st == 'contained' then stat('contained', -1) end   -- a bot-closed contact came back
if st == 'escalating' then stat('escalating', -1) end
redis.call('PERSIST', ckey(cid))
redis.call('HSET', ckey(cid), 'st', 'queued', 'ch', ch, 'sk', sk, 'pri', pri, 'score', score,
           'esc', esc)
stat('escalated')
if not match_contact(cid, now, timeout_ms, limit, out) then
  redis.call('ZADD', Q, tonumber(score), cid)
  out[#out + 1] = {'queued', cid}
end
return out
