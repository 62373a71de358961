-- The bot decided a new contact: the books count it once (a re-delivered arrival finds it).
-- Arguments: state.BotArgs. Returns 1 if new.
local cid = A.contact_id
if redis.call('HEXISTS', K_CONTACTS, cid) == 1 then return 0 end
redis.call('HSET', K_CONTACTS, cid, cmsgpack.pack({st = A.outcome, arr = tonumber(NOW)}))
if A.outcome == CS_CONTAINED then
  redis.call('ZADD', K_RETAINED, NOW + A.retention_s * 1000, cid)
end
redis.call('HINCRBY', K_STATS, 'arrived', 1)
redis.call('HINCRBY', K_STATS, A.outcome, 1)
return 1
