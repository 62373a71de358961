-- The agent finished a contact: capacity frees and the agent takes the most urgent visible
-- contact. Arguments: state.CompleteArgs.
local aid, cid = A.agent_id, A.contact_id
local c = contact(cid)
if not c or c.st ~= CS_ANSWERED or c.ag ~= aid then
  return {T_stale(cid, aid, '', c and c.st or 'unknown')}
end
finish(cid, c, CS_DONE, A.retention_s, NOW)
local a = agent(aid)
stat('completed')
local out = {T_completed(cid, aid, c.ch, c.ln, tonumber(c.rg), waited_of(c, NOW), tonumber(c.pri))}
if a then
  give_back(aid, a, c.ch)
  match_agent(aid, a, NOW, A.scan_limit, out)
end
return out
