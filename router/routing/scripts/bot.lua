-- The bot decided a new contact. ARGV: cid, outcome ('contained' | 'escalating'), now,
-- retention_s. Idempotent: a re-delivered arrival counts once. Returns 1 if new.
-- (Prepended with common.lua like every script, for the key layout.)
local cid, outcome, now, retention = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', ckey(cid)) == 1 then return 0 end
redis.call('HSET', ckey(cid), 'st', outcome, 'arr', now)
if outcome == 'contained' then redis.call('EXPIRE', ckey(cid), retention) end
stat('arrived')
stat(outcome)
return 1
