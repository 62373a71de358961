-- An agent accepted an offer. ARGV: aid, oid, cid, now, target_ms.
local aid, oid, cid = ARGV[1], ARGV[2], ARGV[3]
local now, target_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local c = ckey(cid)
local st, ag, of, esc = unpack(redis.call('HMGET', c, 'st', 'ag', 'of', 'esc'))
if st ~= 'offered' or ag ~= aid or of ~= oid then
  return {{'stale', cid, st or 'unknown'}}
end
local waited = now - tonumber(esc)
local within = 0
if waited <= target_ms then within = 1 end
redis.call('HSET', c, 'st', 'answered', 'ans', now)
redis.call('ZREM', OX, cid)
redis.call('SREM', offers_of(aid), cid)
stat('answered')
stat('answered_within_target', within)
stat('wait_sum_ms', waited)
return {{'answered', cid, aid, oid, '', waited, within}}
