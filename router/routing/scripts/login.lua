-- An agent logged in (or re-sent its profile). ARGV: aid, skills "a=1,b=2", capacity "chat=3",
-- ready (1/0), now, offer_timeout_ms, scan_limit. Loads of work in progress are kept.
local aid, sk, caps, ready = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, timeout_ms, limit = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local k = akey(aid)
local flat = redis.call('HGETALL', k)
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, 2) == 's:' or string.sub(flat[i], 1, 4) == 'cap:' then
    redis.call('HDEL', k, flat[i])
  end
end
for _, pair in ipairs(parse_skills(sk)) do redis.call('HSET', k, 's:' .. pair[1], pair[2]) end
for _, pair in ipairs(parse_skills(caps)) do redis.call('HSET', k, 'cap:' .. pair[1], pair[2]) end
local state = 'not_ready'
if ready == '1' then state = 'ready' end
redis.call('HSET', k, 'st', state)
redis.call('HSETNX', k, 'last', now)
redis.call('SADD', P .. 'agents', aid)
for _, ch in ipairs({'chat', 'voice', 'email'}) do refresh_free(aid, ch) end
local out = {{'logged_in', '', aid}}
if state == 'ready' then match_agent(aid, now, timeout_ms, limit, out) end
return out
