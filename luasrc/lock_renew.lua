-- lock_renew: reset the TTL of a lock, only by its owner, atomically; the
-- lock keeps its fencing token.
-- KEYS[1] lock: the lock key
-- KEYS[2] index: the channel's lock index
-- KEYS[3] fence: the lock's last fencing token (core.Keys.Fence)
-- ARGV[1] owner: who renews the lock
-- ARGV[2] ttlMs: the lock's new TTL, ms (> 0)
-- ARGV[3] name: the lock's name
-- ARGV[4] keepMs: how much longer than the lock its fencing token is kept, ms
-- Returns renewed {1, token:int}
--       | lost {0}
-- lost: the lock is missing or held by another. token is 0 for a lock
-- taken before fencing tokens existed.
-- The index is stretched with the lock (see lock_acquire.lua); the HSET
-- also lists a lock taken before the index existed. So is the fence key,
-- which must outlive the lock by keepMs.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
  local token = redis.call('GET', KEYS[3])
  if not token then return {1, 0} end
  redis.call('PEXPIRE', KEYS[3], string.format('%.0f', tonumber(ARGV[2]) + tonumber(ARGV[4])))
  return {1, token}
end
return {0}
