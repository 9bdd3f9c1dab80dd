-- lock_release: delete a lock, only by its owner (compare and delete),
-- atomically.
-- KEYS[1] lock: the lock key
-- KEYS[2] index: the channel's lock index
-- ARGV[1] owner: who releases the lock
-- ARGV[2] name: the lock's name
-- Returns released:bool
-- released is 0 when the lock is missing or held by another.
-- The last lock's release leaves an empty index, which Redis deletes.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], ARGV[2])
  return 1
end
return 0
