-- An agent changed state (ready / not_ready). ARGV: aid, state, now, offer_timeout_ms, scan_limit.
local aid, state = ARGV[1], ARGV[2]
local now, timeout_ms, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('SISMEMBER', P .. 'agents', aid) == 0 then return {row('unknown_agent', '', aid)} end
set_state(aid, state, now)
local out = {row('state', '', aid)}
if state == 'ready' then match_agent(aid, now, timeout_ms, limit, out) end
return out
