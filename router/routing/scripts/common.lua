-- Shared prelude of every routing script (prepended by store.py; Redis 6.2 has no FUNCTION).
-- KEYS[1] is the domain prefix "pr:{d:<domain>}:"; every key below shares its hash tag, so a
-- script touches one Redis Cluster slot. Time and policy come from Python (ARGV), never from
-- the server. The choices mirror router/routing/policy.py (agent_sort_key, urgency, best_agent,
-- next_contact); docs/ROUTING.md describes the key layout.
local P = KEYS[1]
local OX = P .. 'ox'        -- zset: outstanding offers by expiry, member = contact id
local RX = P .. 'rx'        -- zset: waiting contacts by the time their next ring opens
local RC = P .. 'rc'        -- hash: pool -> agents logged in and ready in it
local STATS = P .. 'stats'  -- hash: the books and SLA counters of the domain
local SEQ = P .. 'seq'      -- string: offer id sequence
local WN = P .. 'wn'        -- hash: "<lane>:<ch>:<class>:<ring>" -> contacts waiting in that list,
                            -- only non-empty ones (agent-driven matching reads just these)
local QW = P .. 'qw'        -- hash: "<lane>:<class>" -> "target_ms|weight" (urgency of a list)
local RANK_SCALE, MAX_RANK, OCC_STEPS = 1e13, 100, 1000

local function ckey(cid) return P .. 'c:' .. cid end
local function akey(aid) return P .. 'a:' .. aid end
local function offers_of(aid) return P .. 'ao:' .. aid end  -- set: contacts offered to aid
-- A waiting list: a lane, channel, service class and ring (also its field in WN).
local function list_id(lane, ch, cls, ring) return lane .. ':' .. ch .. ':' .. cls .. ':' .. ring end
-- zset: the contacts waiting in a list; score = place in line
local function qkey(lane, ch, cls, ring) return P .. 'q:' .. list_id(lane, ch, cls, ring) end
-- zset: ready agents with room on a channel, per pool (a ring's skill requirement and the
-- queue's strategy, shared by every lane ring that asks for the same); score = the strategy
local function fkey(pool, ch) return P .. 'f:' .. pool .. ':' .. ch end

local function stat(field, by) redis.call('HINCRBY', STATS, field, by or 1) end

-- SLA accounting (docs/METRICS.md), counted in the same script as the transition that causes
-- it. Per queue: minute buckets 'sm:<queue>:<epoch minute>' and hour buckets
-- 'sh:<queue>:<epoch hour>' (hashes that expire after SLA_TTL seconds: windows up to "today"
-- are sums of them), and the running totals 'sq:<queue>' (never expire: Prometheus counters).
-- store.py appends the bucket expiry to every call's ARGV, so it is always the last one.
local SLA_TTL = tonumber(ARGV[#ARGV])
local SLAQ = P .. 'slaq'  -- set: queues with SLA figures
local UT = P .. 'ut'      -- hash: "<queue>:<class>" -> target_ms of contacts waiting in it
-- zset: contacts of a queue and service class escalated and not yet answered nor abandoned
-- (queued or offered), score = escalation time: waiting, oldest wait and at risk are read here.
local function unanswered_key(qn, cls) return P .. 'uw:' .. qn .. ':' .. cls end

-- counts: {field, by, field, by, ...}, the first a count of 1 (offered, answered or abandoned)
-- whose new value says whether the key is new: only then is it given its expiry (and the queue
-- recorded), which keeps the extra commands per transition few. wait_ms (answered): also
-- raises the buckets' wait_max_ms.
local function sla_count(qn, now, counts, wait_ms)
  if not qn or qn == '' then return end
  local minute = math.floor(now / 60000)
  local keys = {P .. 'sm:' .. qn .. ':' .. minute, P .. 'sh:' .. qn .. ':' .. math.floor(minute / 60),
                P .. 'sq:' .. qn}
  for i, k in ipairs(keys) do
    local first = redis.call('HINCRBY', k, counts[1], counts[2])
    for j = 3, #counts, 2 do  -- a zero (not within target, not short) needs no command
      if counts[j + 1] ~= 0 then redis.call('HINCRBY', k, counts[j], counts[j + 1]) end
    end
    if i < 3 then
      if first == counts[2] then redis.call('EXPIRE', k, SLA_TTL) end
      if wait_ms and wait_ms > tonumber(redis.call('HGET', k, 'wait_max_ms') or '-1') then
        redis.call('HSET', k, 'wait_max_ms', wait_ms)
      end
    elseif first == counts[2] then
      redis.call('SADD', SLAQ, qn)
    end
  end
end

local function unanswered_add(cid, qn, cls, esc, tg)
  redis.call('ZADD', unanswered_key(qn, cls), esc, cid)
  redis.call('HSET', UT, qn .. ':' .. cls, tg)
end

local function unanswered_remove(cid, qn, cls)
  if qn and cls then redis.call('ZREM', unanswered_key(qn, cls), cid) end
end

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

-- "pool|rank|strategy;..." (policy.Seat.encode): the pools the agent sits in
local function seats(aid)
  local out = {}
  for _, m in ipairs(split(redis.call('HGET', akey(aid), 'pl'), ';')) do
    local f = split(m, '|')
    out[#out + 1] = {pool = f[1], rank = tonumber(f[2]), strategy = f[3]}
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
-- time, more load, later turn) and may fill the agent up, and instead of rewriting every index
-- the agent sits in, stale entries (too low, or an agent now full) are corrected when they
-- reach the head (pick_agent). Scores never fall and room never returns without an eager
-- update (give_back, set_state), so a fresh head is the true best. nil: no room (drop it).
-- The rank is read back from the stored longest_idle score.
local function fresh_score(strategy, stored, aid, ch, pool)
  local st, last, load, cap, rr = unpack(redis.call('HMGET', akey(aid), 'st', 'last', 'load:' .. ch,
                                                    'cap:' .. ch, 'rr:' .. pool))
  last, load, cap, rr = tonumber(last or '0'), tonumber(load or '0'), tonumber(cap or '0'), tonumber(rr or '0')
  if st ~= 'ready' or load >= cap then return nil end
  if strategy == 'longest_idle' then
    return math.floor(stored / RANK_SCALE) * RANK_SCALE + last
  end
  return agent_score(strategy, 0, last, load, cap, rr)
end

-- Eager: the agent enters every index of channel ch with its true scores, or leaves them all.
-- only_least_occupied: just re-score the least_occupied ones (its load fell).
local function index_channel(aid, ch, ss, only_least_occupied)
  ss = ss or seats(aid)
  local k = akey(aid)
  local st, cap, load, last = unpack(redis.call('HMGET', k, 'st', 'cap:' .. ch, 'load:' .. ch, 'last'))
  cap, load, last = tonumber(cap or '0'), tonumber(load or '0'), tonumber(last or '0')
  local room = st == 'ready' and load < cap
  for _, seat in ipairs(ss) do
    if not room then
      redis.call('ZREM', fkey(seat.pool, ch), aid)
    elseif not only_least_occupied or seat.strategy == 'least_occupied' then
      local rr = 0
      if seat.strategy == 'round_robin' then
        rr = tonumber(redis.call('HGET', k, 'rr:' .. seat.pool) or '0')
      end
      redis.call('ZADD', fkey(seat.pool, ch),
                 agent_score(seat.strategy, seat.rank, last, load, cap, rr), aid)
    end
  end
end

local function index_all(aid, ss)
  ss = ss or seats(aid)
  for _, ch in ipairs(agent_channels(aid)) do index_channel(aid, ch, ss) end
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
    index_channel(aid, ch)  -- room again: back in every index (some may still hold it)
  elseif lo == '1' then
    index_channel(aid, ch, nil, true)  -- a least_occupied score fell: update it now
  end
end

-- Count the agent in (by = 1) or out of (by = -1) the ready agents of each of its pools.
local function count_ready(ss, by)
  for _, seat in ipairs(ss) do redis.call('HINCRBY', RC, seat.pool, by) end
end

local function touch(aid, now)  -- idle time only moves forward (workers' clocks may differ)
  local k = akey(aid)
  if now > tonumber(redis.call('HGET', k, 'last') or '0') then redis.call('HSET', k, 'last', now) end
end

-- Change the agent's state, keeping the ready counts right and its indexes exact.
local function set_state(aid, state, now)
  local ss = seats(aid)
  local k = akey(aid)
  local old = redis.call('HGET', k, 'st')
  if old == 'ready' and state ~= 'ready' then count_ready(ss, -1) end
  if old ~= 'ready' and state == 'ready' then
    count_ready(ss, 1)
    touch(aid, now)
  end
  redis.call('HSET', k, 'st', state)
  index_all(aid, ss)
end

-- Transition rows: kind, cid, aid, oid, channel, lane, ring, waited_ms, n2, priority, reason
-- (n2: offered = expires_at_ms, answered = 1 if within target). See store.Transition.
local function row(kind, cid, aid, oid, ch, lane, ring, waited, n2, pri, reason)
  if kind == 'queued' or kind == 'relaxed' then  -- n2: the contact's own count (distinct ids)
    n2 = redis.call('HINCRBY', ckey(cid), 'n', 1)
  end
  return {kind, cid or '', aid or '', oid or '', ch or '', lane or '', ring or 0, waited or 0,
          n2 or 0, pri or 0, reason or ''}
end

-- "0,10000,20000" -> {0, 10000, 20000}
local function parse_delays(rd)
  local out = {}
  for _, d in ipairs(split(rd, ',')) do out[#out + 1] = tonumber(d) end
  return out
end

local function ring_delays(c) return parse_delays(redis.call('HGET', c, 'rd')) end

local function ring_pools(c) return split(redis.call('HGET', c, 'rp'), ';') end

-- policy.open_ring: the ring the wait opened, then further out while no agent is logged in and
-- ready in the pools of rings 0..rg (TaskRouter's skip_if). Returns the ring, whether skipped.
local function open_ring(pools, delays, waited)
  local rg = 0
  for i = 1, #delays do
    if delays[i] <= waited then rg = i - 1 end
  end
  local skipped = false
  while rg < #delays - 1 do
    local ready = 0
    for r = 0, rg do ready = ready + tonumber(redis.call('HGET', RC, pools[r + 1]) or '0') end
    if ready > 0 then break end
    rg = rg + 1
    skipped = true
  end
  return rg, skipped
end

-- Put a contact in its waiting list (at its place) and schedule its next ring.
local function enqueue(cid)
  local c = ckey(cid)
  local ln, ch, cls, rg, score, esc, tg, wt = unpack(redis.call('HMGET', c, 'ln', 'ch', 'cls', 'rg',
                                                                'score', 'esc', 'tg', 'wt'))
  redis.call('HSET', c, 'st', 'queued', 'ag', '', 'of', '')
  if redis.call('ZADD', qkey(ln, ch, cls, rg), tonumber(score), cid) == 1 then
    if redis.call('HINCRBY', WN, list_id(ln, ch, cls, rg), 1) == 1 then
      redis.call('HSET', QW, ln .. ':' .. cls, tg .. '|' .. wt)  -- a list came alive
    end
  end
  local delays = ring_delays(c)
  local nxt = delays[tonumber(rg) + 2]
  if nxt then redis.call('ZADD', RX, tonumber(esc) + nxt, cid) else redis.call('ZREM', RX, cid) end
end

local function dequeue(cid)
  local ln, ch, cls, rg = unpack(redis.call('HMGET', ckey(cid), 'ln', 'ch', 'cls', 'rg'))
  if redis.call('ZREM', qkey(ln, ch, cls, rg), cid) == 1 then
    local field = list_id(ln, ch, cls, rg)
    if redis.call('HINCRBY', WN, field, -1) <= 0 then redis.call('HDEL', WN, field) end
  end
  redis.call('ZREM', RX, cid)
end

-- Reserve agent capacity and offer the contact (which is not in any waiting list). Callers
-- only pick ready agents with room (pick_agent checks the index head, match_agent the agent);
-- should one not (a bug), the offer is refused and counted (stats field
-- invariant_violations) instead of breaking the capacity invariant. f: the contact's {ch, ln, rg, pri, esc} if the caller read them.
-- Returns whether the offer was made.
local function offer(cid, aid, now, timeout_ms, out, pool, f)
  local c = ckey(cid)
  f = f or redis.call('HMGET', c, 'ch', 'ln', 'rg', 'pri', 'esc')
  local ch, ln, rg, pri, esc = f[1], f[2], f[3], f[4], f[5]
  local k = akey(aid)
  local st, cap, load, last, rr = unpack(redis.call('HMGET', k, 'st', 'cap:' .. ch, 'load:' .. ch,
                                                   'last', 'rr:' .. pool))
  cap, load = tonumber(cap or '0'), tonumber(load or '0')
  if st ~= 'ready' or load >= cap then
    stat('invariant_violations')
    index_channel(aid, ch)
    return false
  end
  local oid = 'o' .. redis.call('INCR', SEQ)
  local expires = now + timeout_ms
  redis.call('HSET', c, 'st', 'offered', 'ag', aid, 'of', oid)
  redis.call('ZADD', OX, expires, cid)
  redis.call('SADD', offers_of(aid), cid)
  load = load + 1
  redis.call('HSET', k, 'load:' .. ch, load)
  -- Idle time and turns only move forward (workers' clocks may differ): scores never fall.
  if now > tonumber(last or '0') then redis.call('HSET', k, 'last', now) end
  if now > tonumber(rr or '0') then redis.call('HSET', k, 'rr:' .. pool, now) end
  -- Full or not, the agent's entries in its other pools stay as they are: pick_agent drops or
  -- re-scores them when they come up (see fresh_score).
  stat('offered')
  out[#out + 1] = row('offered', cid, aid, oid, ch, ln, tonumber(rg), now - tonumber(esc),
                      expires, tonumber(pri))
  return true
end

-- The best agent of a free index who may take the contact: the head once its score is fresh
-- (see fresh_score), unless the contact needs extra skills (checked at ring 0 only: rings
-- relax them) or one agent is excluded.
local function pick_agent(key, ring, extra, exclude, limit, ch, pool, strategy)
  local check = #extra > 0 and ring == 0
  local passed = 0  -- fresh entries at the head that may not take it (excluded, lacking skills)
  -- Each entry is re-scored or dropped at most once per call, so this ends; only candidates
  -- that are fresh but lack extra skills count against the scan limit.
  for _ = 0, redis.call('ZCARD', key) do
    local got = redis.call('ZRANGE', key, passed, passed, 'WITHSCORES')
    if #got == 0 then return nil end
    local aid, stored = got[1], tonumber(got[2])
    local fresh = fresh_score(strategy, stored, aid, ch, pool)
    if not fresh then
      redis.call('ZREM', key, aid)  -- full or away since it was indexed: out, look again
    elseif fresh > stored then
      redis.call('ZADD', key, fresh, aid)  -- it moves back; look at the new order
    elseif aid == exclude or (check and not agent_has_skills(aid, extra)) then
      passed = passed + 1
      if passed >= limit then return nil end
    else
      return aid
    end
  end
  return nil
end

-- Contact-driven (policy.best_agent): the innermost open ring with a free eligible agent.
-- queued: whether the contact sits in its waiting list now (a new one does not yet).
local function match_contact(cid, now, timeout_ms, limit, out, exclude, queued)
  local c = ckey(cid)
  local f = redis.call('HMGET', c, 'ch', 'ln', 'rg', 'pri', 'esc', 'xs', 'sg', 'rp')
  local ch, rg, extra, sg = f[1], tonumber(f[3]), parse_skills(f[6]), f[7]
  local pools = split(f[8], ';')
  for r = 0, rg do
    local aid = pick_agent(fkey(pools[r + 1], ch), r, extra, exclude or '', limit, ch,
                           pools[r + 1], sg)
    if aid then
      if queued then dequeue(cid) end
      if offer(cid, aid, now, timeout_ms, out, pools[r + 1], f) then return true end
      if queued then enqueue(cid) end
    end
  end
  return false
end

-- The first contact of a waiting list the agent may take (extra skills bind at ring 0, see
-- pick_agent). Reads the head (and one more, for the excluded contact); scans further only
-- when a head needs extra skills the agent lacks.
local function pick_contact(aid, key, ring, exclude, limit)
  local n = 2
  while true do
    local got = redis.call('ZRANGE', key, 0, n - 1, 'WITHSCORES')
    for i = 1, #got, 2 do
      local cid = got[i]
      if cid ~= exclude then
        local ok = ring > 0
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
  local waiting = redis.call('HGETALL', WN)
  if #waiting == 0 then return end
  local lists, lanes, seen = {}, {}, {}
  for i = 1, #waiting, 2 do
    local ln, ch, cls, r = string.match(waiting[i], '^(.+):([^:]+):([^:]+):(%d+)$')
    lists[#lists + 1] = {key = P .. 'q:' .. waiting[i], ln = ln, ch = ch, cls = cls,
                         ring = tonumber(r)}
    if not seen[ln] then
      seen[ln] = true
      lanes[#lanes + 1] = ln
    end
  end
  local names = {}
  for i, ln in ipairs(lanes) do names[i] = 'r:' .. ln end
  local serves = redis.call('HMGET', akey(aid), unpack(names))  -- 'ring|rings' per lane served
  local from = {}
  for i, ln in ipairs(lanes) do
    if serves[i] then from[ln] = tonumber(string.match(serves[i], '^(%d+)')) end
  end
  local visible, wnames = {}, {}
  for _, q in ipairs(lists) do
    if from[q.ln] and q.ring >= from[q.ln] then
      visible[#visible + 1] = q
      wnames[#wnames + 1] = q.ln .. ':' .. q.cls
    end
  end
  if #visible == 0 then return end
  local weights = redis.call('HMGET', QW, unpack(wnames))
  for i, q in ipairs(visible) do
    local tg, wt = string.match(weights[i] or '', '^([^|]+)|(.+)$')
    q.tg, q.wt = tonumber(tg or '30000'), tonumber(wt or '1')
    q.vip = 1
    if q.cls == 'v' then q.vip = 0 end
  end
  for _ = 1, 100 do  -- at most every slot of the agent (3 channels x 32)
    local room = {}
    for _, q in ipairs(visible) do
      if room[q.ch] == nil then room[q.ch] = agent_has_room(aid, q.ch) end
    end
    local best, best_key, best_q = nil, nil, nil
    for _, q in ipairs(visible) do
      if room[q.ch] then
        local cid, score = pick_contact(aid, q.key, q.ring, exclude or '', limit)
        if cid then
          local u = (now - score) / q.tg * q.wt
          if not best or u > best_key[1]
              or (u == best_key[1] and (q.vip < best_key[2]
              or (q.vip == best_key[2] and (score < best_key[3]
              or (score == best_key[3] and cid < best))))) then
            best, best_key, best_q = cid, {u, q.vip, score}, q
          end
        end
      end
    end
    if not best then return end
    dequeue(best)
    local pool = ring_pools(ckey(best))[from[best_q.ln] + 1]  -- the agent's pool for the lane
    if not offer(best, aid, now, timeout_ms, out, pool) then
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
  if not match_contact(cid, now, timeout_ms, limit, out, aid, true) then
    out[#out + 1] = row('queued', cid, '', '', ch, ln, tonumber(rg), now - tonumber(esc), 0,
                        tonumber(pri), 'requeued')
  end
end

-- The contact's rings opened up to rg (it waited, or skip_if passed over empty ones): record
-- and audit it. The caller moves it between waiting lists if it was queued.
local function relax(cid, rg, skipped, ch, ln, waited, pri, out)
  redis.call('HSET', ckey(cid), 'rg', rg)
  stat('relaxed')
  local why = 'waited'
  if skipped then why = 'no_agent_ready' end
  out[#out + 1] = row('relaxed', cid, '', '', ch, ln, rg, waited, 0, tonumber(pri), why)
end

-- An offer went unanswered (declined, or it lapsed): the agent becomes what the policy says
-- (`after`: not_ready, or as it was), the contact goes back and is re-offered, and an agent
-- still ready takes other work (not the contact it just let go).
local function unanswered(cid, aid, oid, kind, reason, after, now, timeout_ms, limit, out)
  stat(kind)
  if after == 'not_ready' then set_state(aid, 'not_ready', now) end
  return_offer(cid, aid, oid, kind, reason, now, timeout_ms, limit, out)
  if after ~= 'not_ready' then match_agent(aid, now, timeout_ms, limit, out, cid) end
end
