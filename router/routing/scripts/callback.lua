-- The waiting customer leaves the line and asks to be called back: the contact keeps its place
-- in line (its score) and becomes a callback (channel callback, the agents' callback
-- capacity: a slot of its own), offered at once if an agent with a free callback slot may
-- take it, else when an agent finds it the most urgent contact it may take. Only a waiting
-- contact can become one (a preferred ring ends with it). Arguments: state.CallbackArgs.
local cid = A.contact_id
local c = contact(cid)
if not c or c.st ~= CS_QUEUED or (c.cb and c.cb ~= '') then
  return {T_stale(cid, '', '', c and c.st or 'unknown')}
end
dequeue(cid, c)
c.pa = ''
c.och, c.ch, c.cb = c.ch, CH_CALLBACK, A.callback_to
cdirty(cid)
local out = {}
out[#out + 1] = T_callback(cid, '', c.ch, c.ln, tonumber(c.rg), waited_of(c, NOW),
                           tonumber(c.pri), next_seq(cid, c), 'callback_requested')
enqueue(cid, c)
match_contact(cid, c, NOW, A.scan_limit, out, nil, true)
return out
