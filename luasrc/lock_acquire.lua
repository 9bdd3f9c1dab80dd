-- lock_acquire: take a channel lock, or extend it when the owner already
-- holds it, atomically. A lock always has a TTL, so a crashed owner cannot
-- hold a channel forever.
-- KEYS[1] the lock key (in its channel's slot)
-- ARGV[1] owner   ARGV[2] ttl ms (> 0)
-- Returns {1, ttl ms} when ARGV[1] now holds the lock,
--       | {0, current owner, its remaining ttl ms}.
local cur = redis.call('GET', KEYS[1])
if not cur or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, tonumber(ARGV[2])}
end
return {0, cur, redis.call('PTTL', KEYS[1])}
