-- Shared functions of the routing script's bodies. router/routing/state.py puts its generated
-- prelude in front (the declared keys K_*, NOW, SLA_TTL, the call's arguments A and entry id
-- EID, the codes and one constructor T_<kind> per transition), each body after it as a
-- function, and the driver (apply.lua), which runs each call's body in `outboxed`. Every key a
-- script touches is one of its KEYS, all under the domain's hash tag. Time and policy come from
-- Python (A), never from the server. The choices mirror the oracle the property tests hold the
-- scripts to (tests/oracle.py); docs/ROUTING.md describes the layout.
local RANK_SCALE, MAX_RANK, OCC_STEPS = 1e13, 100, 1000
local MAX_PLACE = 9999999999999999
-- The estimated wait's pace (docs/ROUTING.md): each answer moves it toward its own figure by
-- at most this share (a running median, near enough); a lane's own after this many answers,
-- before them the domain's (field PACE_ALL).
local PACE_STEP, PACE_MIN_SAMPLES, PACE_ALL = 0.1, 20, '*'

-- Records (contacts in K_CONTACTS, agents in K_AGENTS) are loaded once per call into these
-- identity maps and written back once, at the end (flush): every function sees the same table.
local CREC, AREC, CDIRTY, ADIRTY = {}, {}, {}, {}

local function contact(cid)
  local r = CREC[cid]
  if r == nil then
    local raw = redis.call('HGET', K_CONTACTS, cid)
    r = raw and cmsgpack.unpack(raw) or false
    CREC[cid] = r
  end
  return r or nil
end

local function new_contact(cid)
  local r = {}
  CREC[cid] = r
  CDIRTY[cid] = true
  return r
end

local function cdirty(cid) CDIRTY[cid] = true end

local function agent(aid)
  local r = AREC[aid]
  if r == nil then
    local raw = redis.call('HGET', K_AGENTS, aid)
    r = raw and cmsgpack.unpack(raw) or false
    if r then  -- maps Lua packed while empty come back as arrays: the same empty table
      r.cap, r.load, r.rr, r.fx = r.cap or {}, r.load or {}, r.rr or {}, r.fx or {}
      r.offers = r.offers or {}
    end
    AREC[aid] = r
  end
  return r or nil
end

-- An agent's profile (skills, lanes served, seats: what only a login changes), apart from
-- the record every offer rewrites, and read only by what needs it.
local PREC, PDIRTY = {}, {}
local function profile(aid)
  local r = PREC[aid]
  if r == nil then
    local raw = redis.call('HGET', K_AGENT_PROFILES, aid)
    r = raw and cmsgpack.unpack(raw) or {}
    r.sk, r.rq, r.serves = r.sk or {}, r.rq or {}, r.serves or {}
    r.seats, r.chs, r.pd = r.seats or {}, r.chs or {}, r.pd or ''
    PREC[aid] = r
  end
  return r
end

local function new_agent(aid)
  local r = {st = AS_OFFLINE, last = 0, cap = {}, load = {}, rr = {}, fx = {}, offers = {},
             lo = false}
  AREC[aid] = r
  ADIRTY[aid] = true
  return r
end

local function adirty(aid) ADIRTY[aid] = true end
local function pdirty(aid) PDIRTY[aid] = true end

local function forget_contact(cid)
  redis.call('HDEL', K_CONTACTS, cid)
  redis.call('HDEL', K_CONTEXT, cid)
  CREC[cid] = false
  CDIRTY[cid] = nil
end

local function flush()
  for cid in pairs(CDIRTY) do
    local r = CREC[cid]
    if r then redis.call('HSET', K_CONTACTS, cid, cmsgpack.pack(r)) end
  end
  for aid in pairs(ADIRTY) do
    local r = AREC[aid]
    if r then redis.call('HSET', K_AGENTS, aid, cmsgpack.pack(r)) end
  end
  for aid in pairs(PDIRTY) do redis.call('HSET', K_AGENT_PROFILES, aid, cmsgpack.pack(PREC[aid])) end
  CDIRTY, ADIRTY, PDIRTY = {}, {}, {}
end

-- Per batch (one apply): the books' counts, added up and written once at its end (batch_end),
-- the outbox entries its calls kept (see outboxed), and its SLA counts (sla_count).
local COUNTS, KEPT, KEPT_FIELDS, KEPT_TIMES = {}, {}, {}, {}

-- A whole number as Redis is given it: string.format('%d') instead of Lua's own conversion
-- (a %.14g through the C library's floating-point formatting, for every number passed).
local function int(n) return string.format('%d', n) end

local function stat(field, by) COUNTS[field] = (COUNTS[field] or 0) + (by or 1) end

-- A score as a fixed-width string: lexicographic order of members is score order.
local function place(n)
  n = math.floor(tonumber(n) or 0)
  if n < 0 then n = 0 elseif n > MAX_PLACE then n = MAX_PLACE end
  return string.format('%016d', n)
end

local function split(s, sep)
  local out = {}
  for part in string.gmatch(s or '', '([^' .. sep .. ']+)') do out[#out + 1] = part end
  return out
end

-- Pure functions of a string, remembered across calls: the library stays loaded, so a list
-- id or a skills text is parsed once, not on every event. Results are shared (never change
-- one); each memo is dropped whole past MEMO_MAX entries (the ids a policy makes are few).
local MEMO_MAX = 20000
local SKILLS, SKILLS_N = {}, 0

-- "zh=1,refund=2" -> {{'zh', 1}, {'refund', 2}}
local function parse_skills(s)
  s = s or ''
  local hit = SKILLS[s]
  if hit then return hit end
  local out = {}
  for name, level in string.gmatch(s, '([^,=]+)=(%d+)') do
    out[#out + 1] = {name, tonumber(level)}
  end
  if SKILLS_N >= MEMO_MAX then SKILLS, SKILLS_N = {}, 0 end
  SKILLS[s], SKILLS_N = out, SKILLS_N + 1
  return out
end

local function has_skills(p, skills)  -- p: the agent's profile
  for i = 1, #skills do
    if (tonumber(p.sk[skills[i][1]]) or 0) < skills[i][2] then return false end
  end
  return true
end

-- SLA accounting (docs/METRICS.md; the layout is router/sla/buckets.py's), counted in the same
-- step as the transition that causes it: the call's minute bucket (a declared key that
-- expires) and the running totals. In each, a queue's counts are one field, `<queue>` -> a
-- MessagePack array of the numbers in SLA_INDEX's order. A batch adds its counts up per queue
-- (sla_count: counts = {name, by, ...}; wait_ms, of an answer, raises wait_max_ms) and reads
-- and writes each bucket once, at its end (sla_flush). A bucket new to a queue gets its expiry
-- then (and the queue is recorded). Hours are the timer's (sla_roll).
local SLA_ADD, SLA_MAX = {}, {}

local function sla_count(qn, counts, wait_ms)
  if not qn or qn == '' then return end
  local add = SLA_ADD[qn]
  if not add then
    add = {}
    for j = 1, SLA_N do add[j] = 0 end
    SLA_ADD[qn] = add
  end
  for j = 1, #counts, 2 do
    local at = SLA_INDEX[counts[j]]
    add[at] = add[at] + counts[j + 1]
  end
  if wait_ms and wait_ms > (SLA_MAX[qn] or -1) then SLA_MAX[qn] = wait_ms end
end

-- A packed value (a MessagePack array) -> its numbers (all 0 when absent; missing trailing
-- ones are 0).
local function sla_parse(v)
  local t = v and cmsgpack.unpack(v) or {}
  for j = #t + 1, SLA_N do t[j] = 0 end
  return t
end

-- Add the counts of from to into (both arrays in SLA_INDEX's order), all but the maximum.
local function sla_sum(into, from)
  for j = 1, SLA_N do
    if j ~= SLA_MAX_AT then into[j] = into[j] + from[j] end
  end
end

-- Add each queue's counts in adds (queue -> numbers) to bucket k, raising wait_max_ms to
-- maxes' (when given). Returns the queues new to the bucket.
local function sla_add(k, queues, adds, maxes)
  local got = redis.call('HMGET', k, unpack(queues))
  local out, new = {}, {}
  for i, qn in ipairs(queues) do
    local t = sla_parse(got[i])
    if not got[i] then new[#new + 1] = qn end
    sla_sum(t, adds[qn])
    local m = maxes and maxes[qn]
    if m and m > t[SLA_MAX_AT] then t[SLA_MAX_AT] = m end
    out[#out + 1] = qn
    out[#out + 1] = cmsgpack.pack(t)
  end
  redis.call('HSET', k, unpack(out))
  return new
end

local function sla_flush()
  local queues = {}
  for qn in pairs(SLA_ADD) do queues[#queues + 1] = qn end
  if #queues == 0 then return end
  if #sla_add(K_SLA_MINUTE, queues, SLA_ADD, SLA_MAX) > 0 then
    redis.call('EXPIRE', K_SLA_MINUTE, SLA_TTL)
  end
  local new = sla_add(K_SLA_TOTALS, queues, SLA_ADD, nil)  -- totals keep no maximum
  if #new > 0 then redis.call('SADD', K_SLA_QUEUES, unpack(new)) end
end

-- The timer adds the minute that is final now (SLA_ROLL_LAG minutes ago: K_SLA_ROLL_MINUTE)
-- into its hour's bucket (K_SLA_ROLL_HOUR), once, and only in turn: the hour's first minute,
-- or the one after the last added (its field SLA_ROLLED). A minute missed (no timer ran in it)
-- leaves the rest of that hour to be read from its minutes; the next hour starts afresh. A
-- minute may hold `<queue>|<count>` fields too (workers of an earlier version): they add in.
local function sla_roll()
  local m = math.floor(NOW / 60000) - SLA_ROLL_LAG
  local last = tonumber(redis.call('HGET', K_SLA_ROLL_HOUR, SLA_ROLLED))
  if (last and last ~= m - 1) or (not last and m % 60 ~= 0) then return end
  local raw = redis.call('HGETALL', K_SLA_ROLL_MINUTE)
  local adds, maxes, queues = {}, {}, {}
  for i = 1, #raw, 2 do
    local qn, count = string.match(raw[i], '^(.*)|([^|]*)$')  -- buckets.FIELD_SEP
    local t = sla_parse(not qn and raw[i + 1] or nil)
    if qn then
      local at = SLA_INDEX[count]
      if at then t[at] = tonumber(raw[i + 1]) end
    else
      qn = raw[i]
    end
    local add = adds[qn]
    if not add then
      add = sla_parse(nil)
      adds[qn], maxes[qn] = add, 0
      queues[#queues + 1] = qn
    end
    sla_sum(add, t)
    maxes[qn] = math.max(maxes[qn], t[SLA_MAX_AT])
  end
  if #queues > 0 then sla_add(K_SLA_ROLL_HOUR, queues, adds, maxes) end
  redis.call('HSET', K_SLA_ROLL_HOUR, SLA_ROLLED, int(m))
  redis.call('EXPIRE', K_SLA_ROLL_HOUR, SLA_TTL)
end

-- Escalated contacts not yet answered nor abandoned, per queue and class (waiting, oldest
-- wait and at risk are read here): `<queue>:<class>|<escalated at>|<contact>`.
local function unanswered_member(cid, c) return c.qn .. ':' .. c.cls .. '|' .. place(c.esc) .. '|' .. cid end

local function unanswered_add(cid, c)
  redis.call('ZADD', K_UNANSWERED, '0', unanswered_member(cid, c))
  redis.call('HSET', K_UNANSWERED_TARGETS, c.qn .. ':' .. c.cls, c.tg)
end

local function unanswered_remove(cid, c)
  if c.qn and c.cls then redis.call('ZREM', K_UNANSWERED, unanswered_member(cid, c)) end
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

local function load_of(a, ch) return tonumber(a.load[ch]) or 0 end
local function cap_of(a, ch) return tonumber(a.cap[ch]) or 0 end

local function has_room(a, ch) return a.st == AS_READY and load_of(a, ch) < cap_of(a, ch) end

-- The free-agent index K_FREE holds `<pool>:<channel>|<score>|<agent>`; the agent's record
-- keeps the score it sits at per group (fx), so an entry can be moved or removed.
local function index_put(aid, a, pool, ch, score)
  local g = pool .. ':' .. ch
  local new = place(score)
  local old = a.fx[g]
  if old == new then return end
  if old then redis.call('ZREM', K_FREE, g .. '|' .. old .. '|' .. aid) end
  redis.call('ZADD', K_FREE, '0', g .. '|' .. new .. '|' .. aid)
  a.fx[g] = new
  adirty(aid)
end

local function index_drop(aid, a, pool, ch)
  local g = pool .. ':' .. ch
  local old = a.fx[g]
  if old then
    redis.call('ZREM', K_FREE, g .. '|' .. old .. '|' .. aid)
    a.fx[g] = nil
    adirty(aid)
  end
end

-- Free indexes are kept lazily: an offer makes the agent's scores rise everywhere (later idle
-- time, more load, later turn) and may fill the agent up, and instead of rewriting every index
-- the agent sits in, stale entries (too low, or an agent now full) are corrected when they
-- reach the head (pick_agent). Scores never fall and room never returns without an eager
-- update (give_back, set_state), so a fresh head is the true best. nil: no room (drop it).
-- The rank is read back from the stored longest_idle score.
local function fresh_score(strategy, stored, a, ch, pool)
  if not has_room(a, ch) then return nil end
  local last = tonumber(a.last) or 0
  if strategy == 'longest_idle' then
    return math.floor(stored / RANK_SCALE) * RANK_SCALE + last
  end
  return agent_score(strategy, 0, last, load_of(a, ch), cap_of(a, ch), tonumber(a.rr[pool]) or 0)
end

-- Eager: the agent enters every index of channel ch with its true scores, or leaves them all.
-- only_least_occupied: just re-score the least_occupied ones (its load fell).
local function index_channel(aid, a, ch, only_least_occupied)
  local room = has_room(a, ch)
  local last = tonumber(a.last) or 0
  for _, seat in ipairs(profile(aid).seats) do
    local pool, rank, strategy = seat[1], tonumber(seat[2]), seat[3]
    if not room then
      index_drop(aid, a, pool, ch)
    elseif not only_least_occupied or strategy == 'least_occupied' then
      index_put(aid, a, pool, ch, agent_score(strategy, rank, last, load_of(a, ch),
                                              cap_of(a, ch), tonumber(a.rr[pool]) or 0))
    end
  end
end

local function index_all(aid, a)
  for _, ch in ipairs(profile(aid).chs) do index_channel(aid, a, ch) end
end

-- Leave every index of channel ch (groups `<pool>:<ch>`), or every index when ch is nil,
-- whatever the seats say now: fx remembers where it sits.
local function index_leave(aid, a, ch)
  local tail = ch and ':' .. ch
  for g, old in pairs(a.fx) do
    if not tail or string.sub(g, -#tail) == tail then
      redis.call('ZREM', K_FREE, g .. '|' .. old .. '|' .. aid)
      a.fx[g] = nil
    end
  end
  adirty(aid)
end

-- The agent's load on ch fell by one (an offer ended, a contact completed).
local function give_back(aid, a, ch)
  local load = load_of(a, ch) - 1
  if load < 0 then load = 0 end
  a.load[ch] = load
  adirty(aid)
  local cap = cap_of(a, ch)
  if a.st ~= AS_READY or load >= cap then return end
  if load == cap - 1 then
    index_channel(aid, a, ch)  -- room again: back in every index (some may still hold it)
  elseif a.lo then
    index_channel(aid, a, ch, true)  -- a least_occupied score fell: update it now
  end
end

-- Count the agent in (by = 1) or out of (by = -1) the ready agents of each of its pools.
local function count_ready(seats, by)
  for _, seat in ipairs(seats) do redis.call('HINCRBY', K_READY_COUNTS, seat[1], int(by)) end
end

local function touch(aid, a, now)  -- idle time only moves forward (workers' clocks may differ)
  if now > (tonumber(a.last) or 0) then
    a.last = now
    adirty(aid)
  end
end

-- Change the agent's state, keeping the ready counts right and its indexes exact.
local function set_state(aid, a, state, now)
  local old = a.st
  local seats = profile(aid).seats
  if old == AS_READY and state ~= AS_READY then count_ready(seats, -1) end
  if old ~= AS_READY and state == AS_READY then
    count_ready(seats, 1)
    touch(aid, a, now)
  end
  a.st = state
  adirty(aid)
  index_all(aid, a)
end

-- A contact's own count of queued and relaxed transitions (their event ids differ).
local function next_seq(cid, c)
  c.n = (tonumber(c.n) or 0) + 1
  cdirty(cid)
  return c.n
end

local function waited_of(c, now) return now - (tonumber(c.esc) or now) end

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
    for r = 0, rg do
      ready = ready + tonumber(redis.call('HGET', K_READY_COUNTS, pools[r + 1]) or '0')
    end
    if ready > 0 then break end
    rg = rg + 1
    skipped = true
  end
  return rg, skipped
end

-- The waiting list a contact belongs in: extra skills bind at ring 0 only, so they split the
-- ring-0 lists (an agent event reads only lists whose contacts it may take).
local function list_of(c)
  local id = c.ln .. ':' .. c.ch .. ':' .. c.cls .. ':' .. c.rg
  if tonumber(c.rg) == 0 and c.xs and c.xs ~= '' then id = id .. ':' .. c.xs end
  return id
end

local function waiting_member(cid, c) return list_of(c) .. '|' .. place(c.score) .. '|' .. cid end

-- The same contact in its lane's line (K_LANE_LINE): every list of the lane, in place order.
local function line_member(cid, c) return c.ln .. '|' .. place(c.score) .. '|' .. cid end

-- A contact in its preferred ring waits for that agent only: `<agent>|<place>|<contact>`.
local function preferred_member(cid, c) return c.pa .. '|' .. place(c.score) .. '|' .. cid end
local function in_preferred_ring(c) return c.pa ~= nil and c.pa ~= '' end

-- Put a contact in its waiting list (at its place) and schedule its next ring; in its
-- preferred ring, in the preferred agent's list until the ring ends.
local function enqueue(cid, c)
  c.st, c.ag, c.of = CS_QUEUED, '', ''
  cdirty(cid)
  if in_preferred_ring(c) then
    redis.call('ZADD', K_PREFERRED, '0', preferred_member(cid, c))
    redis.call('ZADD', K_RINGS, int(c.pu), cid)
    return
  end
  local l = list_of(c)
  if redis.call('ZADD', K_WAITING, '0', waiting_member(cid, c)) == 1 then
    redis.call('ZADD', K_LANE_LINE, '0', line_member(cid, c))
    if redis.call('HINCRBY', K_WAITING_COUNTS, l, '1') == 1 then
      redis.call('HSET', K_LIST_URGENCY, c.ln .. ':' .. c.cls, c.tg .. '|' .. c.wt)  -- alive
    end
  end
  local nxt = c.rd[tonumber(c.rg) + 2]
  if nxt then redis.call('ZADD', K_RINGS, int(c.esc + nxt), cid) else redis.call('ZREM', K_RINGS, cid) end
end

local function dequeue(cid, c)
  if in_preferred_ring(c) then
    redis.call('ZREM', K_PREFERRED, preferred_member(cid, c))
  elseif redis.call('ZREM', K_WAITING, waiting_member(cid, c)) == 1 then
    redis.call('ZREM', K_LANE_LINE, line_member(cid, c))
    local l = list_of(c)
    if redis.call('HINCRBY', K_WAITING_COUNTS, l, '-1') <= 0 then redis.call('HDEL', K_WAITING_COUNTS, l) end
  end
  redis.call('ZREM', K_RINGS, cid)
  redis.call('ZREM', K_PENDING, cid)
  redis.call('ZREM', K_WAIT_NOTICES, cid)
end

-- Position and estimated wait (docs/ROUTING.md): the position is 1 + the contacts of the same
-- lane (any channel, class or ring) whose place in line comes first (K_LANE_LINE, one count);
-- the estimate is the position times the pace (K_LANE_PACE: what a place in line has cost
-- lately, the lane's own once it has PACE_MIN_SAMPLES answers, else the domain's), or, before
-- the domain has one, times the lane's target shared by the agents ready in its ring-0 pool.
local function position_of(cid, c)
  return redis.call('ZLEXCOUNT', K_LANE_LINE, '[' .. c.ln .. '|', '(' .. line_member(cid, c)) + 1
end

-- A pace field's `<ms per place>|<answers>`.
local function parse_pace(raw)
  local m, n = string.match(raw or '', '^([%d.]+)|(%d+)$')
  return tonumber(m), tonumber(n) or 0
end

local function estimate_of(c, position)
  local ready = tonumber(redis.call('HGET', K_READY_COUNTS, c.rp[1]) or '0')
  local paces = redis.call('HMGET', K_LANE_PACE, c.ln, PACE_ALL)
  local lane, seen = parse_pace(paces[1])
  local pace = parse_pace(paces[2])
  if lane and seen >= PACE_MIN_SAMPLES then pace = lane end
  if pace then return math.floor(position * pace), ready end
  return math.floor(position * tonumber(c.tg) / math.max(ready, 1)), ready
end

-- A contact answered after being told a position: its wait since that notice per place in
-- line moves the lane's pace and the domain's toward it, by at most PACE_STEP of the pace (one
-- customer who waited very long cannot throw it).
local function learn_pace(c, now)
  local told_at, told_pos = tonumber(c.wf) or 0, tonumber(c.wp) or 0
  if told_at <= 0 or told_pos <= 0 then return end
  local sample = math.max(now - told_at, 0) / told_pos
  local fields = {c.ln, PACE_ALL}
  local paces = redis.call('HMGET', K_LANE_PACE, c.ln, PACE_ALL)
  local updated = {}
  for i, f in ipairs(fields) do
    local m, n = parse_pace(paces[i])
    if not m then
      m = sample
    else  -- toward the sample, by at most PACE_STEP of the pace
      local most = PACE_STEP * math.max(m, 1)
      m = m + math.max(-most, math.min(most, sample - m))
    end
    updated[#updated + 1] = f
    updated[#updated + 1] = string.format('%.1f|%d', m, n + 1)
  end
  redis.call('HSET', K_LANE_PACE, unpack(updated))
end

-- Tell a waiting customer where they stand (T_waiting: contact.wait_updated.v1); the timer
-- looks again after check_ms (0: it does not).
local function tell_wait(cid, c, now, out, check_ms, position, estimate, ready)
  c.wa, c.we, c.wk = now, estimate, (tonumber(c.wk) or 0) + 1
  if (tonumber(c.wf) or 0) == 0 then c.wf, c.wp = now, position end
  cdirty(cid)
  out[#out + 1] = T_waiting(cid, '', c.ch, c.ln, tonumber(c.rg), waited_of(c, now),
                            tonumber(c.pri), position, estimate, ready, c.wk)
  if check_ms > 0 then redis.call('ZADD', K_WAIT_NOTICES, int(now + check_ms), cid) end
end

-- An offer id that stays unique when Redis loses its data: derived from the contact and its
-- attempt (a contact routed again after a loss gets the same ids for the same attempts).
local function offer_id(cid, att)
  return 'o' .. string.sub(redis.sha1hex(cid .. '#' .. att), 1, 15)
end

-- Reserve agent capacity and offer the contact (which is not in any waiting list). Callers
-- only pick ready agents with room (pick_agent checks the index head, match_agent the agent);
-- should one not (a bug), the offer is refused and counted (stats field
-- invariant_violations) instead of breaking the capacity invariant. Returns whether made.
local function offer(cid, c, aid, a, now, out, pool)
  local ch = c.ch
  if not has_room(a, ch) then
    stat('invariant_violations')
    index_channel(aid, a, ch)
    return false
  end
  c.att = (tonumber(c.att) or 0) + 1
  local oid = offer_id(cid, c.att)
  local expires = now + A.offer_timeout_ms
  c.st, c.ag, c.of = CS_OFFERED, aid, oid
  cdirty(cid)
  redis.call('ZADD', K_OFFERS, int(expires), cid)
  a.offers[#a.offers + 1] = cid
  a.load[ch] = load_of(a, ch) + 1
  -- Idle time and turns only move forward (workers' clocks may differ): scores never fall. A
  -- turn is kept for a round_robin pool only (the one strategy that scores by it; a ring's
  -- pool has its queue's strategy, c.sg).
  touch(aid, a, now)
  if pool and c.sg == 'round_robin' and now > (tonumber(a.rr[pool]) or 0) then a.rr[pool] = now end
  adirty(aid)
  -- Full on this channel now: out of each of its indexes at once (fx says where it sits), as
  -- each would drop it when it came up anyway. Room left: its entries in its pools stay as they
  -- are, and pick_agent re-scores them when they come up (see fresh_score).
  if load_of(a, ch) >= cap_of(a, ch) then index_leave(aid, a, ch) end
  stat('offered')
  out[#out + 1] = T_offered(cid, aid, ch, c.ln, tonumber(c.rg), waited_of(c, now),
                            tonumber(c.pri), oid, expires, c.pa ~= nil and c.pa == aid,
                            c.cb or '')
  return true
end

-- The best agent of a free index group who may take the contact: the head once its score is
-- fresh (see fresh_score), unless the contact needs extra skills (checked at ring 0 only: rings
-- relax them) or one agent is excluded. Returns the agent (and its record), or nil and whether
-- the scan budget ran out before the group did (the timer finishes such a match).
local function pick_agent(pool, ch, ring, extra, exclude, limit, strategy)
  local g = pool .. ':' .. ch
  local lo, hi = '[' .. g .. '|', '(' .. g .. '}'
  local check = #extra > 0 and ring == 0
  local passed = 0  -- fresh entries at the head that may not take it (excluded, lacking skills)
  -- Each entry is re-scored or dropped at most once per call, so this ends (bounded by twice
  -- the group's size, counted only when the look runs long); only candidates that are fresh
  -- but may not take it count against the scan limit.
  local bound = 64
  local looked = 0
  while looked <= bound do
    looked = looked + 1
    if looked == bound then
      bound = math.max(bound, 2 * redis.call('ZLEXCOUNT', K_FREE, lo, hi) + 1)
    end
    local got = redis.call('ZRANGEBYLEX', K_FREE, lo, hi, 'LIMIT', passed, '1')
    if #got == 0 then return nil, false end
    local stored_text, aid = string.match(got[1], '|(%d+)|(.+)$')
    local stored = tonumber(stored_text)
    local a = agent(aid)
    local fresh = a and fresh_score(strategy, stored, a, ch, pool)
    if not fresh then
      redis.call('ZREM', K_FREE, got[1])  -- full or away since it was indexed: out, look again
      if a and a.fx[g] == stored_text then
        a.fx[g] = nil
        adirty(aid)
      end
    elseif fresh > stored then
      index_put(aid, a, pool, ch, fresh)  -- it moves back; look at the new order
    elseif aid == exclude or (check and not has_skills(profile(aid), extra)) then
      passed = passed + 1
      if passed >= limit then return nil, true end
    else
      return aid, a
    end
  end
  return nil, false
end

-- Contact-driven: the innermost open ring with a free eligible agent. queued: whether the
-- contact sits in its waiting list now (a new one does not yet). A match that ran out of its
-- scan budget leaves the contact to the timer (K_PENDING): it finishes the look.
local function match_contact(cid, c, now, limit, out, exclude, queued)
  if in_preferred_ring(c) then  -- only the preferred agent, if it has room now
    local aid = c.pa
    local a = agent(aid)
    if aid == exclude or not a or not has_room(a, c.ch) then return false end
    local from = tonumber(profile(aid).serves[c.ln])
    if queued then dequeue(cid, c) end
    if offer(cid, c, aid, a, now, out, from and c.rp[from + 1]) then return true end
    if queued then enqueue(cid, c) end
    return false
  end
  local extra = parse_skills(c.xs)
  local exhausted = false
  for r = 0, tonumber(c.rg) do
    local pool = c.rp[r + 1]
    local aid, a = pick_agent(pool, c.ch, r, extra, exclude or '', limit, c.sg)
    if aid then
      if queued then dequeue(cid, c) end
      if offer(cid, c, aid, a, now, out, pool) then return true end
      if queued then enqueue(cid, c) end
    elseif a then
      exhausted = true
    end
  end
  if exhausted then redis.call('ZADD', K_PENDING, 'NX', int(now), cid) end
  return false
end

-- The first contact of a waiting list (the second when the first is excluded).
local function list_head(list, exclude)
  local got = redis.call('ZRANGEBYLEX', K_WAITING, '[' .. list .. '|', '(' .. list .. '}',
                         'LIMIT', 0, 2)
  for _, member in ipairs(got) do
    local at, cid = string.match(member, '|(%d+)|(.+)$')
    if cid ~= exclude then return cid, tonumber(at) end
  end
  return nil
end

-- Agent-driven: fill the agent's free capacity with the most urgent visible contacts across
-- its lanes (urgency = effective wait / target x weight; VIP first at equal urgency). Only
-- non-empty lists are read, each only if the agent may take its contacts (lane and ring it
-- serves, the list's extra skills), and only its head: the work is bounded by the lists.
-- The contacts waiting in their preferred ring for this agent, in place order, while it has
-- room on their channel (they come before its lanes' lists: only it may take them now).
local function match_preferred(aid, a, now, out, exclude)
  local got = redis.call('ZRANGEBYLEX', K_PREFERRED, '[' .. aid .. '|', '(' .. aid .. '}',
                         'LIMIT', 0, 100)
  for _, member in ipairs(got) do
    local cid = string.match(member, '|%d+|(.+)$')
    local c = contact(cid)
    if c and cid ~= exclude and has_room(a, c.ch) then
      local from = tonumber(profile(aid).serves[c.ln])
      dequeue(cid, c)
      if not offer(cid, c, aid, a, now, out, from and c.rp[from + 1]) then
        enqueue(cid, c)
        return
      end
    end
  end
end

-- A waiting list's id parsed (list_of), remembered across calls like parse_skills'.
local LISTS, LISTS_N = {}, 0
local function parse_list(l)
  local ln, ch, cls, r, xs = string.match(l, '^([^:]+):([^:]+):([^:]+):(%d+):?(.*)$')
  if LISTS_N >= MEMO_MAX then LISTS, LISTS_N = {}, 0 end
  local m = {ln = ln, ch = ch, cls = cls, ring = tonumber(r) or 0,
             xs = xs ~= '' and parse_skills(xs), w = (ln or '') .. ':' .. (cls or '')}
  LISTS[l], LISTS_N = m, LISTS_N + 1
  return m
end

local function match_agent(aid, a, now, limit, out, exclude)
  match_preferred(aid, a, now, out, exclude or '')
  local waiting = redis.call('HKEYS', K_WAITING_COUNTS)
  if #waiting == 0 then return end
  local p = profile(aid)
  local serves = p.serves
  local visible, wnames = {}, {}
  for i = 1, #waiting do  -- the hot loop: every non-empty list of the domain
    local l = waiting[i]
    local m = LISTS[l] or parse_list(l)
    local from = serves[m.ln]
    if from and m.ring >= from and (not m.xs or has_skills(p, m.xs)) then
      visible[#visible + 1] = {id = l, ln = m.ln, ch = m.ch, cls = m.cls, ring = m.ring,
                               from = from}
      wnames[#wnames + 1] = m.w
    end
  end
  if #visible == 0 then return end
  local weights = redis.call('HMGET', K_LIST_URGENCY, unpack(wnames))
  for i, q in ipairs(visible) do
    local tg, wt = string.match(weights[i] or '', '^([^|]+)|(.+)$')
    q.tg, q.wt = tonumber(tg or '30000'), tonumber(wt or '1')
    q.vip = 1
    if q.cls == SC_VIP then q.vip = 0 end
  end
  -- Each list's head is read once (q.head: its contact, false when empty) and read again only
  -- after its contact was offered: the other lists did not change meanwhile.
  for _ = 1, 100 do  -- at most every slot of the agent (3 channels x 32)
    local best, best_key, best_q = nil, nil, nil
    for _, q in ipairs(visible) do
      if has_room(a, q.ch) then
        if q.head == nil then
          q.head, q.at = list_head(q.id, exclude or '')
          q.head = q.head or false
        end
        local cid, score = q.head, q.at
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
    best_q.head = nil
    local c = contact(best)
    dequeue(best, c)
    local pool = c.rp[best_q.from + 1]  -- the agent's pool for the lane
    if not offer(best, c, aid, a, now, out, pool) then
      enqueue(best, c)
      return
    end
  end
end

local function remove_offer_of(a, cid)
  for i, x in ipairs(a.offers) do
    if x == cid then
      table.remove(a.offers, i)
      return
    end
  end
end

-- Free the agent's capacity held by an offer (the contact is placed by the caller).
local function release_offer(cid, c, aid, a)
  redis.call('ZREM', K_OFFERS, cid)
  if a then
    remove_offer_of(a, cid)
    give_back(aid, a, c.ch)
  end
end

local function finish(cid, c, state, retention_s, now)
  c.st = state
  cdirty(cid)
  redis.call('ZADD', K_RETAINED, int(now + retention_s * 1000), cid)
  redis.call('HDEL', K_CONTEXT, cid)  -- the offer's context is of no use any more
end

-- The contact's rings opened up to rg (it waited, or skip_if passed over empty ones): record
-- and audit it. The caller moves it between waiting lists if it was queued.
local function relax(cid, c, rg, skipped, waited, out)
  c.rg = rg
  cdirty(cid)
  stat('relaxed')
  local why = 'waited'
  if skipped then why = 'no_agent_ready' end
  out[#out + 1] = T_relaxed(cid, '', c.ch, c.ln, rg, waited, tonumber(c.pri), next_seq(cid, c), why)
end

-- The contact's preferred ring ends (its time ran out, or the agent left): it joins the normal
-- rings its wait opened, audited as a relaxation (why: preferred_ring_over,
-- preferred_agent_left), and is offered at once if it can be. It is queued (in K_PREFERRED).
local function end_preferred(cid, c, why, now, limit, out)
  dequeue(cid, c)
  c.pa = ''
  local waited = waited_of(c, now)
  local rg = open_ring(c.rp, c.rd, waited)
  if rg > tonumber(c.rg) then c.rg = rg end
  cdirty(cid)
  stat('relaxed')
  out[#out + 1] = T_relaxed(cid, '', c.ch, c.ln, tonumber(c.rg), waited, tonumber(c.pri),
                            next_seq(cid, c), why)
  enqueue(cid, c)
  redis.call('ZADD', K_WAIT_NOTICES, int(now), cid)  -- the timer tells it where it stands
  match_contact(cid, c, now, limit, out, nil, true)
end

-- An agent leaves: contacts waiting in its preferred ring wait no longer for it.
local function release_preferred(aid, now, limit, out)
  local got = redis.call('ZRANGEBYLEX', K_PREFERRED, '[' .. aid .. '|', '(' .. aid .. '}')
  for _, member in ipairs(got) do
    local cid = string.match(member, '|%d+|(.+)$')
    local c = contact(cid)
    if c and c.st == CS_QUEUED and c.pa == aid then
      end_preferred(cid, c, 'preferred_agent_left', now, limit, out)
    else
      redis.call('ZREM', K_PREFERRED, member)
    end
  end
end

-- An offer ends without an answer (declined, expired, agent left): the agent's capacity frees,
-- the contact goes back to its place in line and is offered elsewhere at once if it can be.
local function return_offer(cid, c, aid, a, oid, kind, reason, now, limit, out)
  release_offer(cid, c, aid, a)
  if in_preferred_ring(c) and c.pa == aid then c.pa = '' end  -- it let it go: normal rings
  local waited = waited_of(c, now)
  local pri, rg = tonumber(c.pri), tonumber(c.rg)
  if kind == 'rescinded' then
    stat('rescinded')
    out[#out + 1] = T_rescinded(cid, aid, c.ch, c.ln, rg, waited, pri, oid, reason)
  elseif kind == 'declined' then
    out[#out + 1] = T_declined(cid, aid, c.ch, c.ln, rg, waited, pri, oid, reason)
  else
    out[#out + 1] = T_expired(cid, aid, c.ch, c.ln, rg, waited, pri, oid, reason)
  end
  enqueue(cid, c)
  if not in_preferred_ring(c) then redis.call('ZADD', K_WAIT_NOTICES, int(now), cid) end
  if not match_contact(cid, c, now, limit, out, aid, true) then
    out[#out + 1] = T_queued(cid, '', c.ch, c.ln, rg, waited, pri, next_seq(cid, c), 'requeued')
  end
end

-- An offer went unanswered (declined, or it lapsed): the agent becomes what the policy says
-- (`after`: not_ready, or as it was), the contact goes back and is re-offered, and an agent
-- still ready takes other work (not the contact it just let go).
local function unanswered(cid, c, aid, oid, kind, reason, after, now, limit, out)
  stat(kind)
  local a = agent(aid)
  if a and after == 'not_ready' then set_state(aid, a, AS_NOT_READY, now) end
  return_offer(cid, c, aid, a, oid, kind, reason, now, limit, out)
  if a and after ~= 'not_ready' then match_agent(aid, a, now, limit, out, cid) end
end

-- The script's transitions, kept in the outbox under the call's entry id (the input event's
-- id, or the timer step's) in the same atomic step, when any of them publishes something; a
-- call that finds its entry kept (a retry after a lost reply, a re-delivery before Kafka had
-- the outputs) returns the kept transitions and changes nothing. The stage deletes an entry
-- once Kafka has its records (store.ack); the timer re-sends entries left behind (tick.lua).
-- Returns the call's result as MessagePack, a list of {entry id, transitions} (see packed_entry).
local EXTRA_ENTRIES = {}  -- the tick adds entries it re-sends: {entry id, transitions packed}
-- Forget what a call held in memory (a call that failed midway leaves it unflushed).
local function reset()
  CREC, AREC, CDIRTY, ADIRTY, PREC, PDIRTY, EXTRA_ENTRIES = {}, {}, {}, {}, {}, {}, {}
end

-- A batch begins: its counts and kept entries start empty, and the entries its calls' ids
-- already have are read (one read for all of them).
local function batch_start(eids)
  COUNTS, KEPT, KEPT_FIELDS, KEPT_TIMES = {}, {}, {}, {}
  SLA_ADD, SLA_MAX = {}, {}
  if #eids == 0 then return end
  local got = redis.call('HMGET', K_OUTBOX, unpack(eids))
  for i, eid in ipairs(eids) do
    if got[i] then KEPT[eid] = got[i] end
  end
end

-- A batch ends (or stops at a refusal): the entries its calls kept and its counts, written.
local function batch_end()
  if #KEPT_FIELDS > 0 then
    redis.call('HSET', K_OUTBOX, unpack(KEPT_FIELDS))
    redis.call('ZADD', K_OUTBOX_TIMES, unpack(KEPT_TIMES))
  end
  for field, by in pairs(COUNTS) do
    if by ~= 0 then redis.call('HINCRBY', K_STATS, field, int(by)) end
  end
  sla_flush()
end

-- MessagePack by hand where the parts are packed already (kept entries are stored packed):
-- nothing is decoded and packed again. An array's head, and one {entry id, transitions} entry.
local function array_head(n)
  if n < 16 then return string.char(0x90 + n) end
  return string.char(0xdc, math.floor(n / 256), n % 256)
end
local function packed_entry(id, rows) return '\146' .. cmsgpack.pack(id) .. rows end

local function outboxed(body)
  reset()
  if EID ~= '' then
    local kept = KEPT[EID]  -- kept before this batch, or by an earlier call of it
    if kept then return array_head(1) .. packed_entry(EID, kept) end
  end
  local out = body()
  flush()
  local publish = false
  for _, t in ipairs(out) do
    if PUBLISHED[t[1]] then  -- a transition: its kind, then its fields (state.T)
      publish = true
      break
    end
  end
  local id = ''
  local packed = cmsgpack.pack(out)
  if publish and EID ~= '' then
    KEPT[EID] = packed
    KEPT_FIELDS[#KEPT_FIELDS + 1] = EID
    KEPT_FIELDS[#KEPT_FIELDS + 1] = packed
    KEPT_TIMES[#KEPT_TIMES + 1] = int(NOW)
    KEPT_TIMES[#KEPT_TIMES + 1] = EID
    id = EID
  end
  local parts = {array_head(1 + #EXTRA_ENTRIES), packed_entry(id, packed)}
  for _, e in ipairs(EXTRA_ENTRIES) do parts[#parts + 1] = packed_entry(e[1], e[2]) end
  return table.concat(parts)
end
