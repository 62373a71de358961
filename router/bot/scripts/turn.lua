-- Record one handled event in a conversation, with the records it produced (its outbox), in one
-- step. KEYS[1] the conversation hash. ARGV: event_id, ttl_s, records ('' = none), then field,
-- value, ... (the whole new state). Idempotent: an event id already handled (the `ids` field,
-- " id1 id2 ", every event of the conversation) changes nothing and returns {0, its records}
-- while they are kept (Kafka does not have them yet), {0} once they are gone. Returns {1} if
-- applied.
local eid = ARGV[1]
local ids = redis.call('HGET', KEYS[1], 'ids') or ' '
if string.find(ids, ' ' .. eid .. ' ', 1, true) then
  local kept = redis.call('HGET', KEYS[1], 'ob:' .. eid)
  if kept then return {0, kept} end
  return {0}
end
-- A conversation silence closed and the customer spoke again: a new one begins (its close,
-- if Kafka does not have it yet, is dropped: the customer is back).
redis.call('HDEL', KEYS[1], 'ob:close')
redis.call('HSET', KEYS[1], 'ids', ids .. eid .. ' ', unpack(ARGV, 4))
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'ob:' .. eid, ARGV[3]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return {1}
