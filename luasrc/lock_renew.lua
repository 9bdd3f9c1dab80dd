-- lock_renew: reset the TTL of a lock, only by its owner, atomically.
-- KEYS[1] lock: the lock key
-- KEYS[2] index: the channel's lock index
-- ARGV[1] owner: who renews the lock
-- ARGV[2] ttlMs: the lock's new TTL, ms (> 0)
-- ARGV[3] name: the lock's name
-- Returns renewed:bool
-- renewed is 0 when the lock is missing or held by another.
-- The index is stretched with the lock (see lock_acquire.lua); the HSET
-- also lists a lock taken before the index existed.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
  return 1
end
return 0
