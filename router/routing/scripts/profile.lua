-- An agent's routing profile changed (agent.profile_changed.v1, issue 9). store.py runs this
-- prelude in front of login.lua: an agent logged in is seated again with the new skills and
-- capacity through the login path (work in progress, idle time and its state kept); one that is
-- not logged in is left alone (it gets the profile from the roster at its next login).
-- ARGV: as login.lua; ARGV[4] (ready) is replaced by the agent's current state.
local profile_aid = ARGV[1]
if redis.call('SISMEMBER', P .. 'agents', profile_aid) == 0 then
  return {row('profile_pending', '', profile_aid)}
end
if redis.call('HGET', akey(profile_aid), 'st') == 'ready' then ARGV[4] = '1' else ARGV[4] = '0' end
