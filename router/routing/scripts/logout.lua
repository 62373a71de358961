-- An agent logged out: outstanding offers are rescinded and re-routed; it leaves every index.
-- ARGV: aid, now, offer_timeout_ms, scan_limit.
local aid = ARGV[1]
local now, timeout_ms, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', akey(aid)) == 0 then return {{'unknown_agent', '', aid}} end
local out = {}
local offered = redis.call('SMEMBERS', offers_of(aid))
for _, cid in ipairs(offered) do
  local oid = redis.call('HGET', ckey(cid), 'of')
  out[#out + 1] = {'rescinded', cid, aid, oid}
  withdraw_offer(cid, aid)
end
redis.call('HSET', akey(aid), 'st', 'offline')
for _, ch in ipairs(agent_channels(aid)) do
  redis.call('HSET', akey(aid), 'load:' .. ch, 0)
  redis.call('ZREM', free_key(ch), aid)
end
redis.call('SREM', P .. 'agents', aid)
for _, cid in ipairs(offered) do match_contact(cid, now, timeout_ms, limit, out) end
out[#out + 1] = {'logged_out', '', aid}
return out
