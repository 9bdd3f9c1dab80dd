-- lock_release: delete a lock, only by its owner (compare and delete),
-- atomically.
-- KEYS[1] the lock key
-- ARGV[1] owner
-- Returns 1 when released, 0 when the lock is missing or held by another.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
