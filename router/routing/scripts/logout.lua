-- An agent logged out (or went offline): it leaves every index; its outstanding offers are
-- rescinded and re-routed, contacts waiting in its preferred ring join their normal rings.
-- Contacts it already answered stay with it until completed.
-- Arguments: state.LogoutArgs.
local aid = A.agent_id
local a = agent(aid)
if redis.call('SISMEMBER', K_SEATED, aid) == 0 or not a then return {T_unknown_agent('', aid)} end
local out = {}
set_state(aid, a, AS_OFFLINE, NOW)
index_leave(aid, a)
redis.call('SREM', K_SEATED, aid)
local offered = {}
for i, cid in ipairs(a.offers) do offered[i] = cid end
for _, cid in ipairs(offered) do
  local c = contact(cid)
  if c and c.st == CS_OFFERED and c.ag == aid then
    return_offer(cid, c, aid, a, c.of, 'rescinded', 'agent_logged_out', NOW, A.scan_limit, out)
  else
    remove_offer_of(a, cid)
  end
end
-- An absent preferred agent costs no wait: contacts in its preferred ring go to their rings.
release_preferred(aid, NOW, A.scan_limit, out)
out[#out + 1] = T_logged_out('', aid)
return out
