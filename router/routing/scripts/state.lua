-- An agent changed state (ready / not_ready). ARGV: aid, state, now, offer_timeout_ms, scan_limit.
local aid, state = ARGV[1], ARGV[2]
local now, timeout_ms, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('EXISTS', akey(aid)) == 0 then return {{'unknown_agent', '', aid}} end
redis.call('HSET', akey(aid), 'st', state)
if state == 'ready' then redis.call('HSET', akey(aid), 'last', now) end
refresh_all(aid)
local out = {{'state', '', aid}}
if state == 'ready' then match_agent(aid, now, timeout_ms, limit, out) end
return out
