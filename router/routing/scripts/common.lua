-- Shared prelude of every routing script (prepended by store.py; Redis 6.2 has no FUNCTION).
-- KEYS[1] is the domain prefix "pr:{d:<domain>}:"; every key below shares its hash tag, so a
-- script touches one Redis Cluster slot. Time comes from Python (ARGV), never from the server.
local P = KEYS[1]
local Q = P .. 'q'          -- zset: waiting contacts, score = queue order (earlier = first)
local OX = P .. 'ox'        -- zset: outstanding offers by expiry, member = contact id
local STATS = P .. 'stats'  -- hash: the books and SLA counters of the domain
local SEQ = P .. 'seq'      -- string: offer id sequence

local function ckey(cid) return P .. 'c:' .. cid end
local function akey(aid) return P .. 'a:' .. aid end
local function offers_of(aid) return P .. 'ao:' .. aid end  -- set: contacts offered to aid
local function free_key(ch) return P .. 'free:' .. ch end   -- zset: ready agents with room, by last offer

local function stat(field, by) redis.call('HINCRBY', STATS, field, by or 1) end

-- "zh=1,refund=2" -> {{'zh', 1}, {'refund', 2}}
local function parse_skills(s)
  local out = {}
  for name, level in string.gmatch(s or '', '([^,=]+)=(%d+)') do
    out[#out + 1] = {name, tonumber(level)}
  end
  return out
end

local function agent_has_skills(aid, skills)
  local k = akey(aid)
  for i = 1, #skills do
    local level = tonumber(redis.call('HGET', k, 's:' .. skills[i][1]) or '0')
    if level < skills[i][2] then return false end
  end
  return true
end

local function agent_has_room(aid, ch)
  local st, cap, load = unpack(redis.call('HMGET', akey(aid), 'st', 'cap:' .. ch, 'load:' .. ch))
  return st == 'ready' and tonumber(load or '0') < tonumber(cap or '0')
end

-- Keep the free index of channel ch in step with the agent's state and load.
local function refresh_free(aid, ch)
  if agent_has_room(aid, ch) then
    local last = redis.call('HGET', akey(aid), 'last') or '0'
    redis.call('ZADD', free_key(ch), tonumber(last), aid)
  else
    redis.call('ZREM', free_key(ch), aid)
  end
end

local function agent_channels(aid)
  local chans = {}
  local flat = redis.call('HGETALL', akey(aid))
  for i = 1, #flat, 2 do
    local ch = string.match(flat[i], '^cap:(.+)$')
    if ch then chans[#chans + 1] = ch end
  end
  return chans
end

local function refresh_all(aid)
  for _, ch in ipairs(agent_channels(aid)) do refresh_free(aid, ch) end
end

-- Reserve agent capacity and offer the contact; appends the transition to out.
local function offer(cid, aid, now, timeout_ms, out)
  local c = ckey(cid)
  local ch, sk, pri, esc = unpack(redis.call('HMGET', c, 'ch', 'sk', 'pri', 'esc'))
  local oid = 'o' .. redis.call('INCR', SEQ)
  local expires = now + timeout_ms
  redis.call('HSET', c, 'st', 'offered', 'ag', aid, 'of', oid)
  redis.call('ZREM', Q, cid)
  redis.call('ZADD', OX, expires, cid)
  redis.call('SADD', offers_of(aid), cid)
  redis.call('HINCRBY', akey(aid), 'load:' .. ch, 1)
  redis.call('HSET', akey(aid), 'last', now)
  refresh_free(aid, ch)
  stat('offered')
  out[#out + 1] = {'offered', cid, aid, oid, ch, now - tonumber(esc), expires, tonumber(pri) or 0, sk or ''}
end

-- Contact-driven: offer to the longest-idle ready agent with room and every skill.
local function match_contact(cid, now, timeout_ms, limit, out)
  local ch, sk = unpack(redis.call('HMGET', ckey(cid), 'ch', 'sk'))
  local skills = parse_skills(sk)
  local candidates = redis.call('ZRANGE', free_key(ch), 0, limit - 1)
  for _, aid in ipairs(candidates) do
    if agent_has_skills(aid, skills) and agent_has_room(aid, ch) then
      offer(cid, aid, now, timeout_ms, out)
      return true
    end
  end
  return false
end

-- Agent-driven: fill the agent's free capacity from the head of the queue.
local function match_agent(aid, now, timeout_ms, limit, out)
  local waiting = redis.call('ZRANGE', Q, 0, limit - 1)
  for _, cid in ipairs(waiting) do
    local ch, sk = unpack(redis.call('HMGET', ckey(cid), 'ch', 'sk'))
    if ch and agent_has_room(aid, ch) and agent_has_skills(aid, parse_skills(sk)) then
      offer(cid, aid, now, timeout_ms, out)
    end
  end
end

-- Put an offered contact back at its place in the queue and free the agent's capacity.
local function withdraw_offer(cid, aid)
  local c = ckey(cid)
  local ch, score = unpack(redis.call('HMGET', c, 'ch', 'score'))
  redis.call('ZREM', OX, cid)
  redis.call('SREM', offers_of(aid), cid)
  redis.call('HINCRBY', akey(aid), 'load:' .. ch, -1)
  redis.call('HSET', c, 'st', 'queued', 'ag', '', 'of', '')
  redis.call('ZADD', Q, tonumber(score), cid)
end

local function finish(cid, state, retention_s)
  redis.call('HSET', ckey(cid), 'st', state)
  redis.call('EXPIRE', ckey(cid), retention_s)
end
