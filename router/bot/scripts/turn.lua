-- Record one handled event in a conversation. KEYS[1] conversation hash, KEYS[2] silence
-- deadlines (zset, member = contact id). ARGV: event_id, contact_id, ttl_s, deadline_ms
-- ('' = none: the contact is with a person), then field, value, ... (the whole new state).
-- Idempotent: an event id already in the `ids` field (" id1 id2 ") changes nothing.
-- Returns 1 if applied.
local ids = redis.call('HGET', KEYS[1], 'ids')
if ids and string.find(ids, ' ' .. ARGV[1] .. ' ', 1, true) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[2], ARGV[2])
else
  redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[2])
end
return 1
