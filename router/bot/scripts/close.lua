-- Close a conversation whose silence deadline has passed, or forget it once Kafka has the
-- close. KEYS[1] the conversation hash; ARGV: mode ('close' | 'ack'), now_ms, silence_ms.
-- close: a conversation the bot still holds (answered, rephrase) and silent for silence_ms
-- is marked closed, its close kept in the outbox (`ob:close`) until Kafka has it; a close
-- already kept is returned again (its record may not have reached Kafka). Returns {'closed',
-- language, intent, last activity ms}, {'wait', deadline} if it spoke since, or false (gone,
-- or a person has it).
-- ack: the conversation goes, unless the customer spoke again since (turn.lua dropped the
-- close: a new conversation began).
if ARGV[1] == 'ack' then
  if redis.call('HEXISTS', KEYS[1], 'ob:close') == 1 then redis.call('DEL', KEYS[1]) end
  return 1
end
local f = redis.call('HMGET', KEYS[1], 'lang', 'intent', 'phase', 'last', 'ob:close')
if not f[1] then return false end
if f[5] then return cmsgpack.unpack(f[5]) end
if f[3] ~= 'answered' and f[3] ~= 'rephrase' then return false end
local due = tonumber(f[4] or '0') + tonumber(ARGV[3])
if due > tonumber(ARGV[2]) then return {'wait', due} end
local closed = {'closed', f[1], f[2] or '', f[4] or '0'}
redis.call('HSET', KEYS[1], 'ob:close', cmsgpack.pack(closed))
return closed
