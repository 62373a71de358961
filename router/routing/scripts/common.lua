-- Shared prelude of every routing script (prepended by store.py; Redis 6.2 has no FUNCTION).
-- KEYS[1] is the domain prefix "pr:{d:<domain>}:"; every key below shares its hash tag, so a
-- script touches one Redis Cluster slot. Time and policy come from Python (ARGV), never from
-- the server. The choices mirror router/routing/policy.py (agent_sort_key, urgency, best_agent,
-- next_contact); docs/ROUTING.md describes the key layout.
local P = KEYS[1]
local OX = P .. 'ox'        -- zset: outstanding offers by expiry, member = contact id
local RX = P .. 'rx'        -- zset: waiting contacts by the time their next ring opens
local RC = P .. 'rc'        -- hash: "<lane>:<ring>" -> agents logged in and ready there
local STATS = P .. 'stats'  -- hash: the books and SLA counters of the domain
local SEQ = P .. 'seq'      -- string: offer id sequence
local LANES = P .. 'lanes'  -- set: lanes that ever had a waiting contact
local WN = P .. 'wn'        -- hash: lane -> contacts waiting (agent-driven matching skips empty lanes)
-- zset: every waiting contact of a lane by escalation time (live values: count, oldest wait)
local function wkey(lane) return P .. 'w:' .. lane end
local RANK_SCALE, MAX_RANK, OCC_STEPS = 1e13, 100, 1000

local function ckey(cid) return P .. 'c:' .. cid end
local function akey(aid) return P .. 'a:' .. aid end
local function offers_of(aid) return P .. 'ao:' .. aid end  -- set: contacts offered to aid
-- zset: waiting contacts of a lane, channel, service class and ring; score = place in line
local function qkey(lane, ch, cls, ring) return P .. 'q:' .. lane .. ':' .. ch .. ':' .. cls .. ':' .. ring end
-- zset: ready agents with room on a channel, per lane and ring; score = the queue's strategy
local function fkey(lane, ring, ch) return P .. 'f:' .. lane .. ':' .. ring .. ':' .. ch end

local function stat(field, by) redis.call('HINCRBY', STATS, field, by or 1) end

local function split(s, sep)
  local out = {}
  for part in string.gmatch(s or '', '([^' .. sep .. ']+)') do out[#out + 1] = part end
  return out
end

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

-- "lane|ring|rank|strategy|rings;..." (policy.Membership.encode) -> list of tables
local function memberships(aid)
  local out = {}
  for _, m in ipairs(split(redis.call('HGET', akey(aid), 'm'), ';')) do
    local f = split(m, '|')
    out[#out + 1] = {lane = f[1], ring = tonumber(f[2]), rank = tonumber(f[3]), strategy = f[4],
                     rings = tonumber(f[5])}
  end
  return out
end

local function agent_channels(aid) return split(redis.call('HGET', akey(aid), 'chs'), ',') end

local function agent_has_room(aid, ch)
  local st, cap, load = unpack(redis.call('HMGET', akey(aid), 'st', 'cap:' .. ch, 'load:' .. ch))
  return st == 'ready' and tonumber(load or '0') < tonumber(cap or '0')
end

-- policy.agent_sort_key
local function agent_score(strategy, rank, last, load, cap, rr)
  if strategy == 'least_occupied' then
    return math.floor(load * OCC_STEPS / math.max(cap, 1)) * RANK_SCALE + last
  elseif strategy == 'round_robin' then
    return rr
  end
  return (MAX_RANK - rank) * RANK_SCALE + last
end

-- Free indexes are kept lazily: an offer makes the agent's scores rise everywhere (later idle
-- time, more load, later turn), and instead of rewriting every index the agent sits in, the
-- stale (too low) entries are corrected when they reach the head (pick_agent). Scores never
-- fall without an eager update (room regained, less load under least_occupied), so a fresh
-- head is the true best. The rank is read back from the stored longest_idle score.
local function fresh_score(strategy, stored, aid, ch, lane)
  local last, load, cap, rr = unpack(redis.call('HMGET', akey(aid), 'last', 'load:' .. ch,
                                                'cap:' .. ch, 'rr:' .. lane))
  last, load, cap, rr = tonumber(last or '0'), tonumber(load or '0'), tonumber(cap or '0'), tonumber(rr or '0')
  if strategy == 'longest_idle' then
    return math.floor(stored / RANK_SCALE) * RANK_SCALE + last
  end
  return agent_score(strategy, 0, last, load, cap, rr)
end

-- Eager: the agent enters every index of channel ch with its true scores, or leaves them all.
-- only_least_occupied: just re-score the least_occupied ones (its load fell).
local function index_channel(aid, ch, ms, only_least_occupied)
  ms = ms or memberships(aid)
  local k = akey(aid)
  local st, cap, load, last = unpack(redis.call('HMGET', k, 'st', 'cap:' .. ch, 'load:' .. ch, 'last'))
  cap, load, last = tonumber(cap or '0'), tonumber(load or '0'), tonumber(last or '0')
  local room = st == 'ready' and load < cap
  for _, m in ipairs(ms) do
    if not room then
      redis.call('ZREM', fkey(m.lane, m.ring, ch), aid)
    elseif not only_least_occupied or m.strategy == 'least_occupied' then
      local rr = 0
      if m.strategy == 'round_robin' then
        rr = tonumber(redis.call('HGET', k, 'rr:' .. m.lane) or '0')
      end
      redis.call('ZADD', fkey(m.lane, m.ring, ch), agent_score(m.strategy, m.rank, last, load, cap, rr), aid)
    end
  end
end

local function index_all(aid, ms)
  ms = ms or memberships(aid)
  for _, ch in ipairs(agent_channels(aid)) do index_channel(aid, ch, ms) end
end

-- The agent's load on ch fell by one (an offer ended, a contact completed).
local function give_back(aid, ch)
  local k = akey(aid)
  local load = redis.call('HINCRBY', k, 'load:' .. ch, -1)
  if load < 0 then
    redis.call('HSET', k, 'load:' .. ch, 0)
    load = 0
  end
  local st, cap, lo = unpack(redis.call('HMGET', k, 'st', 'cap:' .. ch, 'lo'))
  cap = tonumber(cap or '0')
  if st ~= 'ready' or load >= cap then return end
  if load == cap - 1 then
    index_channel(aid, ch)  -- room again: back in every index
  elseif lo == '1' then
    index_channel(aid, ch, nil, true)  -- a least_occupied score fell: update it now
  end
end

-- Count the agent in (by = 1) or out of (by = -1) the ready agents of each of its lane rings.
local function count_ready(ms, by)
  for _, m in ipairs(ms) do redis.call('HINCRBY', RC, m.lane .. ':' .. m.ring, by) end
end

local function touch(aid, now)  -- idle time only moves forward (workers' clocks may differ)
  local k = akey(aid)
  if now > tonumber(redis.call('HGET', k, 'last') or '0') then redis.call('HSET', k, 'last', now) end
end

-- Change the agent's state, keeping the ready counts right and its indexes exact.
local function set_state(aid, state, now, ms)
  ms = ms or memberships(aid)
  local k = akey(aid)
  local old = redis.call('HGET', k, 'st')
  if old == 'ready' and state ~= 'ready' then count_ready(ms, -1) end
  if old ~= 'ready' and state == 'ready' then
    count_ready(ms, 1)
    touch(aid, now)
  end
  redis.call('HSET', k, 'st', state)
  index_all(aid, ms)
end

-- Transition rows: kind, cid, aid, oid, channel, lane, ring, waited_ms, n2, priority, reason
-- (n2: offered = expires_at_ms, answered = 1 if within target). See store.Transition.
local function row(kind, cid, aid, oid, ch, lane, ring, waited, n2, pri, reason)
  return {kind, cid or '', aid or '', oid or '', ch or '', lane or '', ring or 0, waited or 0,
          n2 or 0, pri or 0, reason or ''}
end

local function ring_delays(c)
  local out = {}
  for _, d in ipairs(split(redis.call('HGET', c, 'rd'), ',')) do out[#out + 1] = tonumber(d) end
  return out
end

-- policy.ring_for_wait, then skip rings with nobody ready (TaskRouter's skip_if): while no
-- agent is logged in and ready in rings 0..rg of the lane, the next ring opens at once.
-- Returns the ring and whether a skip happened.
local function open_ring(lane, delays, waited)
  local rg = 0
  for i = 1, #delays do
    if delays[i] <= waited then rg = i - 1 end
  end
  local skipped = false
  while rg < #delays - 1 do
    local ready = 0
    for r = 0, rg do ready = ready + tonumber(redis.call('HGET', RC, lane .. ':' .. r) or '0') end
    if ready > 0 then break end
    rg = rg + 1
    skipped = true
  end
  return rg, skipped
end

-- Put a contact in its waiting list (at its place) and schedule its next ring.
local function enqueue(cid)
  local c = ckey(cid)
  local ln, ch, cls, rg, score, esc = unpack(redis.call('HMGET', c, 'ln', 'ch', 'cls', 'rg', 'score', 'esc'))
  redis.call('HSET', c, 'st', 'queued', 'ag', '', 'of', '')
  if redis.call('ZADD', qkey(ln, ch, cls, rg), tonumber(score), cid) == 1 then
    redis.call('HINCRBY', WN, ln, 1)
  end
  redis.call('ZADD', wkey(ln), tonumber(esc), cid)
  redis.call('SADD', LANES, ln)
  local delays = ring_delays(c)
  local nxt = delays[tonumber(rg) + 2]
  if nxt then redis.call('ZADD', RX, tonumber(esc) + nxt, cid) else redis.call('ZREM', RX, cid) end
end

local function dequeue(cid)
  local ln, ch, cls, rg = unpack(redis.call('HMGET', ckey(cid), 'ln', 'ch', 'cls', 'rg'))
  if redis.call('ZREM', qkey(ln, ch, cls, rg), cid) == 1 then
    redis.call('HINCRBY', WN, ln, -1)
  end
  redis.call('ZREM', wkey(ln), cid)
  redis.call('ZREM', RX, cid)
end

-- Reserve agent capacity and offer the contact (which is not in any waiting list). The
-- indexes only ever hold ready agents with room; should one not (a bug), the offer is refused
-- and counted (stats field invariant_violations, exported as a metric) instead of breaking
-- the capacity invariant. Returns whether the offer was made.
local function offer(cid, aid, now, timeout_ms, out)
  local c = ckey(cid)
  local ch, ln, rg, pri, esc = unpack(redis.call('HMGET', c, 'ch', 'ln', 'rg', 'pri', 'esc'))
  if not agent_has_room(aid, ch) then
    stat('invariant_violations')
    index_channel(aid, ch)
    return false
  end
  local oid = 'o' .. redis.call('INCR', SEQ)
  local expires = now + timeout_ms
  redis.call('HSET', c, 'st', 'offered', 'ag', aid, 'of', oid)
  redis.call('ZADD', OX, expires, cid)
  redis.call('SADD', offers_of(aid), cid)
  local k = akey(aid)
  local load = redis.call('HINCRBY', k, 'load:' .. ch, 1)
  touch(aid, now)
  redis.call('HSET', k, 'rr:' .. ln, now)
  if load >= tonumber(redis.call('HGET', k, 'cap:' .. ch) or '0') then
    index_channel(aid, ch)  -- full: out of every index of the channel (other scores: lazy)
  end
  stat('offered')
  out[#out + 1] = row('offered', cid, aid, oid, ch, ln, tonumber(rg), now - tonumber(esc),
                      expires, tonumber(pri))
  return true
end

-- The best agent of a free index who may take the contact: the head once its score is fresh
-- (see fresh_score), unless the contact needs extra skills (checked at ring 0 only: rings
-- relax them) or one agent is excluded.
local function pick_agent(key, ring, extra, exclude, limit, ch, lane, strategy)
  local check = #extra > 0 and ring == 0
  local n = 2  -- the head, and the next one in case the head is the excluded agent
  if check then n = limit end
  for _ = 1, limit do
    local got = redis.call('ZRANGE', key, 0, n - 1, 'WITHSCORES')
    local stale = false
    for i = 1, #got, 2 do
      local aid, stored = got[i], tonumber(got[i + 1])
      local fresh = fresh_score(strategy, stored, aid, ch, lane)
      if fresh > stored then
        redis.call('ZADD', key, fresh, aid)  -- it moves back; look at the new order
        stale = true
        break
      end
      if aid ~= exclude and (not check or agent_has_skills(aid, extra)) then return aid end
    end
    if not stale then return nil end
  end
  return nil
end

-- Contact-driven (policy.best_agent): the innermost open ring with a free eligible agent.
local function match_contact(cid, now, timeout_ms, limit, out, exclude)
  local ch, ln, rg, xs, sg = unpack(redis.call('HMGET', ckey(cid), 'ch', 'ln', 'rg', 'xs', 'sg'))
  local extra = parse_skills(xs)
  for r = 0, tonumber(rg) do
    local aid = pick_agent(fkey(ln, r, ch), r, extra, exclude or '', limit, ch, ln, sg)
    if aid then
      dequeue(cid)
      if offer(cid, aid, now, timeout_ms, out) then return true end
      enqueue(cid)
    end
  end
  return false
end

-- The first contact of a waiting list the agent may take (extra skills: see pick_agent).
-- Reads the head (and one more, for the excluded contact); scans further only when a head
-- needs extra skills the agent lacks.
local function pick_contact(aid, key, mring, exclude, limit)
  local n = 2
  while true do
    local got = redis.call('ZRANGE', key, 0, n - 1, 'WITHSCORES')
    for i = 1, #got, 2 do
      local cid = got[i]
      if cid ~= exclude then
        local ok = mring > 0
        if not ok then
          local xs = redis.call('HGET', ckey(cid), 'xs')
          ok = (not xs) or xs == '' or agent_has_skills(aid, parse_skills(xs))
        end
        if ok then return cid, tonumber(got[i + 1]) end
      end
    end
    if #got < 2 * n or n >= limit then return nil end
    n = limit
  end
end

-- Agent-driven (policy.next_contact): fill the agent's free capacity with the most urgent
-- visible contacts across its lanes (urgency = effective wait / target x weight; VIP first at
-- equal urgency). Lanes with nobody waiting are skipped without a look.
local function match_agent(aid, now, timeout_ms, limit, out, exclude)
  local ms = memberships(aid)
  if #ms == 0 then return end
  local lanes = {}
  for i, m in ipairs(ms) do lanes[i] = m.lane end
  local counts = redis.call('HMGET', WN, unpack(lanes))
  local active = {}
  for i, m in ipairs(ms) do
    if tonumber(counts[i] or '0') > 0 then active[#active + 1] = m end
  end
  if #active == 0 then return end
  local chans = agent_channels(aid)
  for _ = 1, 64 do
    local best, best_key = nil, nil
    for _, ch in ipairs(chans) do
      if agent_has_room(aid, ch) then
        for _, m in ipairs(active) do
          for r = m.ring, m.rings - 1 do
            for _, cls in ipairs({'v', 'n'}) do
              local cid, score = pick_contact(aid, qkey(m.lane, ch, cls, r), m.ring,
                                              exclude or '', limit)
              if cid then
                local tg, wt = unpack(redis.call('HMGET', ckey(cid), 'tg', 'wt'))
                local u = (now - score) / tonumber(tg) * tonumber(wt)
                local vip = 1
                if cls == 'v' then vip = 0 end
                if not best or u > best_key[1]
                    or (u == best_key[1] and (vip < best_key[2]
                    or (vip == best_key[2] and (score < best_key[3]
                    or (score == best_key[3] and cid < best))))) then
                  best, best_key = cid, {u, vip, score}
                end
              end
            end
          end
        end
      end
    end
    if not best then return end
    dequeue(best)
    if not offer(best, aid, now, timeout_ms, out) then
      enqueue(best)
      return
    end
  end
end

-- Free the agent's capacity held by an offer (the contact is placed by the caller).
local function release_offer(cid, aid)
  local ch = redis.call('HGET', ckey(cid), 'ch')
  redis.call('ZREM', OX, cid)
  redis.call('SREM', offers_of(aid), cid)
  give_back(aid, ch)
  return ch
end

local function finish(cid, state, retention_s)
  redis.call('HSET', ckey(cid), 'st', state)
  redis.call('EXPIRE', ckey(cid), retention_s)
end

-- An offer ends without an answer (declined, expired, agent left): the agent's capacity frees,
-- the contact goes back to its place in line and is offered elsewhere at once if it can be.
local function return_offer(cid, aid, oid, kind, reason, now, timeout_ms, limit, out)
  local ln, rg, esc, ch, pri = unpack(redis.call('HMGET', ckey(cid), 'ln', 'rg', 'esc', 'ch', 'pri'))
  release_offer(cid, aid)
  if kind == 'rescinded' then stat('rescinded') end
  out[#out + 1] = row(kind, cid, aid, oid, ch, ln, tonumber(rg), now - tonumber(esc), 0,
                      tonumber(pri), reason)
  enqueue(cid)
  if not match_contact(cid, now, timeout_ms, limit, out, aid) then
    out[#out + 1] = row('queued', cid, '', '', ch, ln, tonumber(rg), now - tonumber(esc), 0,
                        tonumber(pri), 'requeued')
  end
end
