-- Time-driven: offers whose answer time ran out. ARGV: now, offer_timeout_ms, scan_limit, max.
local now, timeout_ms, limit, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local out = {}
local due = redis.call('ZRANGEBYSCORE', OX, '-inf', now, 'LIMIT', 0, max)
for _, cid in ipairs(due) do
  local aid, oid = unpack(redis.call('HMGET', ckey(cid), 'ag', 'of'))
  out[#out + 1] = {'expired', cid, aid, oid}
  withdraw_offer(cid, aid)
  redis.call('HSET', akey(aid), 'st', 'not_ready')
  refresh_all(aid)
  stat('expired')
end
for _, cid in ipairs(due) do
  match_contact(cid, now, timeout_ms, limit, out)
end
return out
