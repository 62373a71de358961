-- The agent declined (or did not answer) an offer: the agent goes not-ready (redirect on no
-- answer), the contact returns to its place and is offered elsewhere.
-- ARGV: aid, oid, cid, now, offer_timeout_ms, scan_limit, kind ('declined' | 'expired').
local aid, oid, cid = ARGV[1], ARGV[2], ARGV[3]
local now, timeout_ms, limit, kind = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local st, ag, of = unpack(redis.call('HMGET', ckey(cid), 'st', 'ag', 'of'))
if st ~= 'offered' or ag ~= aid or of ~= oid then
  return {{'stale', cid, st or 'unknown'}}
end
local out = {{kind, cid, aid, oid}}
withdraw_offer(cid, aid)
redis.call('HSET', akey(aid), 'st', 'not_ready')
refresh_all(aid)
stat(kind)
match_contact(cid, now, timeout_ms, limit, out)
return out
