-- The agent declined an offer: the contact goes back to its place in line and is offered
-- elsewhere; the agent becomes ready or not ready as the policy says (on_decline).
-- Arguments: state.DeclineArgs.
local aid, oid, cid = A.agent_id, A.offer_id, A.contact_id
local c = contact(cid)
if not c or c.st ~= CS_OFFERED or c.ag ~= aid or c.of ~= oid then
  return {T_stale(cid, aid, oid, c and c.st or 'unknown')}
end
local out = {}
unanswered(cid, c, aid, oid, 'declined', A.reason, A.on_decline, NOW, A.scan_limit, out)
return out
