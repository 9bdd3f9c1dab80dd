-- lock_renew: reset the TTL of a lock, only by its owner, atomically.
-- KEYS[1] the lock key
-- ARGV[1] owner   ARGV[2] ttl ms (> 0)
-- Returns 1 when renewed, 0 when the lock is missing or held by another.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
