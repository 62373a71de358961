-- Close the conversations whose silence deadline has passed. KEYS[1] the silence zset;
-- ARGV: the conversation key prefix, now_ms, limit. Each due contact is taken out of the zset
-- and its conversation deleted in this one step, so two workers never close it twice.
-- Returns {contact_id, language, intent, last activity ms} per closed contact.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, cid in ipairs(due) do
  redis.call('ZREM', KEYS[1], cid)
  local key = ARGV[1] .. cid
  local f = redis.call('HMGET', key, 'lang', 'intent', 'phase', 'last')
  if f[1] and f[3] ~= 'escalated' then
    redis.call('DEL', key)
    out[#out + 1] = {cid, f[1], f[2] or '', f[4] or '0'}
  end
end
return out
