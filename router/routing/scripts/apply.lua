-- The batch driver (state.APPLY: the library's one function, its keys and arguments bound by
-- the prelude's bind before this runs): ARGV[3] holds the batch's calls, {body, outbox entry id,
-- arguments} each (state.encode_calls). Each runs in order with its own arguments (A), entry
-- id (EID) and identity maps (fresh for each: a call that failed midway leaves nothing),
-- wrapped in the outbox (outboxed). A body's own error is that call's result and the others
-- run on; a refusal of the server (OOM, READONLY, ...: a write it cannot take now) ends the
-- batch with that error, for the caller to retry the batch (calls that ran before it give
-- their kept transitions back then).
-- The outbox entries the calls keep and the books' counts are written once, at the batch's end
-- (batch_start reads the entries the calls' ids have, batch_end writes).
-- Returns MessagePack: per call, its list of {entry id, transitions}, or its error's text.
local results = {}
local calls = cmsgpack.unpack(ARGV[3])
local eids = {}
for _, call in ipairs(calls) do
  if call[2] ~= '' then eids[#eids + 1] = call[2] end
end
batch_start(eids)
for i, call in ipairs(calls) do
  EID, A = call[2], call[3]
  local ok, res = pcall(outboxed, BODIES[call[1]])
  if ok then
    results[i] = res  -- packed already
  else
    local msg = type(res) == 'table' and res.err or tostring(res)
    if REFUSALS[string.match(msg, '^(%u+)')] then
      pcall(batch_end)  -- what the calls before it kept, if the server still takes it
      return redis.error_reply(msg)
    end
    results[i] = cmsgpack.pack(msg)
  end
end
batch_end()
return array_head(#results) .. table.concat(results)
