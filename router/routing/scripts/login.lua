-- An agent logged in, its profile changed, or a worker on another routing policy re-seats it:
-- skills, capacity, lanes served and seats (computed by the policy in Python) replace the old
-- ones; loads of work in progress and offers out are kept. Arguments: state.LoginArgs. Modes:
--   login    the agent logs in (ready or not, as it asks);
--   profile  only if logged in, keeping its state (else: profile_pending, the roster has it);
--   reseat   only if still logged in with the profile and policy it was read with (else
--            reseat_skipped: a change in between wins, the next step looks again).
local aid = A.agent_id
local a = agent(aid)
local p = profile(aid)
local seated = redis.call('SISMEMBER', K_SEATED, aid) == 1
local function same(x, y)
  for k, v in pairs(x) do if tonumber(y[k]) ~= tonumber(v) then return false end end
  for k, v in pairs(y) do if tonumber(x[k]) ~= tonumber(v) then return false end end
  return true
end
if A.mode == 'profile' and not (seated and a) then return {T_profile_pending('', aid)} end
if A.mode == 'reseat' then
  if not (seated and a) or p.pd ~= A.expect_digest or not same(p.sk, A.expect_skills)
      or not same(p.rq, A.expect_asked) then
    return {T_reseat_skipped('', aid)}
  end
end
if not a then a = new_agent(aid) end
-- Seated by a worker on another policy than the domain's: the current ones look again.
if redis.call('HGET', K_META, META_POLICY) ~= A.digest then redis.call('HDEL', K_META, META_RESEATED) end
local was = a.st
if not seated then was = AS_OFFLINE end
if was == AS_READY then count_ready(p.seats, -1) end
index_leave(aid, a)
local state = AS_NOT_READY
if A.mode == 'login' then
  if A.ready then state = AS_READY end
elseif was == AS_READY then  -- profile and reseat keep the agent's state
  state = AS_READY
end
local chs, lo = {}, false
for ch in pairs(A.capacity) do chs[#chs + 1] = ch end
table.sort(chs)
for _, seat in ipairs(A.seats) do
  if seat[3] == 'least_occupied' then lo = true end
end
for ch in pairs(a.load) do  -- a channel it holds work on but no longer has: keep its load
  if A.capacity[ch] == nil and (tonumber(a.load[ch]) or 0) > 0 then chs[#chs + 1] = ch end
end
p.sk, p.rq, p.serves, p.seats, p.chs, p.pd = A.skills, A.asked, A.serves, A.seats, chs, A.digest
pdirty(aid)
a.cap, a.lo = A.capacity, lo
local rr = {}  -- turns are kept for the pools it still sits in
for _, seat in ipairs(A.seats) do rr[seat[1]] = a.rr[seat[1]] end
a.rr = rr
if (tonumber(a.last) or 0) == 0 then a.last = NOW end
redis.call('SADD', K_SEATED, aid)
-- A profile re-sent while ready keeps the agent's idle time (a reconnect is not a new turn).
a.st = state
adirty(aid)
if state == AS_READY then
  count_ready(p.seats, 1)
  if was ~= AS_READY then touch(aid, a, NOW) end
end
index_all(aid, a)
local out = {T_logged_in('', aid)}
if state == AS_READY then match_agent(aid, a, NOW, A.scan_limit, out) end
return out
