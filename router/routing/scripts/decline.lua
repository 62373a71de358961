-- The agent declined an offer: the contact goes back to its place in line and is offered
-- elsewhere; the agent becomes ready or not ready as the policy says (on_decline).
-- ARGV: aid, oid, cid, now, offer_timeout_ms, scan_limit, on_decline, reason.
local aid, oid, cid = ARGV[1], ARGV[2], ARGV[3]
local now, timeout_ms, limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local after, reason = ARGV[7], ARGV[8]
local st, ag, of = unpack(redis.call('HMGET', ckey(cid), 'st', 'ag', 'of'))
if st ~= 'offered' or ag ~= aid or of ~= oid then
  return {row('stale', cid, aid, oid, '', '', 0, 0, 0, 0, st or 'unknown')}
end
local out = {}
unanswered(cid, aid, oid, 'declined', reason, after, now, timeout_ms, limit, out)
return out
