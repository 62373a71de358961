-- An agent logged in (or re-sent its profile): skills, capacity and memberships (computed by
-- policy.memberships) replace the old ones; loads of work in progress are kept.
-- ARGV: aid, skills "a=1,b=2", capacity "chat=3", ready (1/0), memberships, now,
-- offer_timeout_ms, scan_limit.
local aid, sk, caps, ready, mem = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, timeout_ms, limit = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local k = akey(aid)
local old = memberships(aid)
if redis.call('HGET', k, 'st') == 'ready' then count_ready(old, -1) end
for _, ch in ipairs(agent_channels(aid)) do
  for _, m in ipairs(old) do redis.call('ZREM', fkey(m.lane, m.ring, ch), aid) end
end
local flat = redis.call('HGETALL', k)
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, 2) == 's:' or string.sub(flat[i], 1, 4) == 'cap:' then
    redis.call('HDEL', k, flat[i])
  end
end
for _, pair in ipairs(parse_skills(sk)) do redis.call('HSET', k, 's:' .. pair[1], pair[2]) end
for _, pair in ipairs(parse_skills(caps)) do redis.call('HSET', k, 'cap:' .. pair[1], pair[2]) end
local chs = {}
for _, pair in ipairs(parse_skills(caps)) do chs[#chs + 1] = pair[1] end
local lo = 0
if string.find(mem, '|least_occupied|', 1, true) then lo = 1 end
redis.call('HSET', k, 'm', mem, 'st', 'offline', 'chs', table.concat(chs, ','), 'lo', lo)
redis.call('HSETNX', k, 'last', now)
redis.call('SADD', P .. 'agents', aid)
local state = 'not_ready'
if ready == '1' then state = 'ready' end
set_state(aid, state, now)
local out = {row('logged_in', '', aid)}
if state == 'ready' then match_agent(aid, now, timeout_ms, limit, out) end
return out
