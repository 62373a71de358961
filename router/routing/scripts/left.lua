-- The customer left. Waiting or offered contacts are abandoned (an offer is rescinded and the
-- agent takes other work); finished contacts ignore it. ARGV: cid, now, short_abandon_ms,
-- offer_timeout_ms, scan_limit, retention_s.
local cid = ARGV[1]
local now, short_ms, timeout_ms, limit, retention = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local st, ag, of, esc, ch = unpack(redis.call('HMGET', ckey(cid), 'st', 'ag', 'of', 'esc', 'ch'))
local out = {}
if st == 'escalating' then
  stat('escalating', -1)
elseif st == 'queued' then
  redis.call('ZREM', Q, cid)
elseif st == 'offered' then
  redis.call('ZREM', OX, cid)
  redis.call('SREM', offers_of(ag), cid)
  redis.call('HINCRBY', akey(ag), 'load:' .. ch, -1)
  out[#out + 1] = {'rescinded', cid, ag, of}
else
  return {{'stale', cid, st or 'unknown'}}
end
local waited = 0
if esc then waited = now - tonumber(esc) end
finish(cid, 'abandoned', retention)
stat('abandoned')
if esc and waited <= short_ms then stat('short_abandoned') end
out[#out + 1] = {'abandoned', cid, '', '', '', waited}
if st == 'offered' then
  refresh_free(ag, ch)
  match_agent(ag, now, timeout_ms, limit, out)
end
return out
