-- An agent logged out (or went offline): it leaves every index; its outstanding offers are
-- rescinded and re-routed. Contacts it already answered stay with it until completed.
-- ARGV: aid, now, offer_timeout_ms, scan_limit.
local aid = ARGV[1]
local now, timeout_ms, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('SISMEMBER', P .. 'agents', aid) == 0 then return {row('unknown_agent', '', aid)} end
local out = {}
set_state(aid, 'offline', now)
redis.call('SREM', P .. 'agents', aid)
for _, cid in ipairs(redis.call('SMEMBERS', offers_of(aid))) do
  local oid = redis.call('HGET', ckey(cid), 'of')
  return_offer(cid, aid, oid, 'rescinded', 'agent_logged_out', now, timeout_ms, limit, out)
end
out[#out + 1] = row('logged_out', '', aid)
return out
