-- An agent changed state (ready / not_ready). Arguments: state.StateArgs.
local aid = A.agent_id
local a = agent(aid)
if redis.call('SISMEMBER', K_SEATED, aid) == 0 or not a then return {T_unknown_agent('', aid)} end
set_state(aid, a, A.state, NOW)
local out = {T_state('', aid, A.state)}
if A.state == AS_READY then match_agent(aid, a, NOW, A.scan_limit, out) end
return out
