-- An agent logged in (or re-sent its profile): skills, capacity, memberships and seats
-- (computed by policy.memberships and policy.seats) replace the old ones; loads of work in
-- progress are kept. ARGV: aid, skills "a=1,b=2", capacity "chat=3" (the policy's cap applied),
-- ready (1/0), memberships, seats, now, offer_timeout_ms, scan_limit, capacity asked for,
-- policy digest (a worker with another policy re-seats the agent: RoutingStore.reseat).
local aid, sk, caps, ready, mem, pl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now, timeout_ms, limit = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local asked, digest = ARGV[10], ARGV[11]
local k = akey(aid)
local old = seats(aid)
local was = redis.call('HGET', k, 'st')
if was == 'ready' then count_ready(old, -1) end
for _, ch in ipairs(agent_channels(aid)) do
  for _, seat in ipairs(old) do redis.call('ZREM', fkey(seat.pool, ch), aid) end
end
local flat = redis.call('HGETALL', k)
for i = 1, #flat, 2 do
  local head = string.sub(flat[i], 1, 2)
  if head == 's:' or head == 'r:' or string.sub(flat[i], 1, 4) == 'cap:' then
    redis.call('HDEL', k, flat[i])
  end
end
for _, pair in ipairs(parse_skills(sk)) do redis.call('HSET', k, 's:' .. pair[1], pair[2]) end
for _, pair in ipairs(parse_skills(caps)) do redis.call('HSET', k, 'cap:' .. pair[1], pair[2]) end
for _, m in ipairs(split(mem, ';')) do  -- lane|ring|rings -> r:<lane> = ring|rings
  local lane, rest = string.match(m, '^([^|]+)|(.*)$')
  redis.call('HSET', k, 'r:' .. lane, rest)
end
local chs = {}
for _, pair in ipairs(parse_skills(caps)) do chs[#chs + 1] = pair[1] end
local lo = 0
if string.find(pl, '|least_occupied', 1, true) then lo = 1 end
redis.call('HSET', k, 'm', mem, 'pl', pl, 'chs', table.concat(chs, ','), 'lo', lo, 'sk', sk,
           'rq', asked, 'pd', digest)
redis.call('HSETNX', k, 'last', now)
redis.call('SADD', P .. 'agents', aid)
local state = 'not_ready'
if ready == '1' then state = 'ready' end
-- A profile re-sent while ready keeps the agent's idle time (a reconnect is not a new turn).
redis.call('HSET', k, 'st', state)
local new = seats(aid)
if state == 'ready' then
  count_ready(new, 1)
  if was ~= 'ready' then touch(aid, now) end
end
index_all(aid, new)
local out = {row('logged_in', '', aid)}
if state == 'ready' then match_agent(aid, now, timeout_ms, limit, out) end
return out
