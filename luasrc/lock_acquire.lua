-- lock_acquire: take a channel lock, or extend it when the owner already
-- holds it, atomically, and hand out the acquisition's fencing token. A
-- lock always has a TTL, so a crashed owner cannot hold a channel forever.
-- KEYS[1] lock: the lock key (in its channel's slot)
-- KEYS[2] index: the channel's lock index (core.Keys.LockIndex, same slot)
-- KEYS[3] fence: the lock's last fencing token (core.Keys.Fence, same slot)
-- ARGV[1] owner: who takes the lock
-- ARGV[2] ttlMs: the lock's TTL, ms (> 0)
-- ARGV[3] name: the lock's name
-- ARGV[4] lockPrefix: the prefix of the channel's lock keys (core.Keys.LockPrefix)
-- ARGV[5] keepMs: how much longer than the lock its fencing token is kept, ms
-- Returns held {1, ttlMs:int, token:int}
--       | taken {0, owner:str, ttlMs:int}
-- held: the owner now holds the lock for ttlMs, under token; taken: owner
-- holds it, for ttlMs more.
-- Every acquisition, the owner's own included, gets a new token: the last
-- one + 1, but never less than the server's clock in microseconds (TIME).
-- The floor is what keeps tokens growing once the fence key has expired
-- (keepMs after the lock) or was lost: the clock has moved on by then. It
-- assumes the clock of the channel's master never steps back by more than
-- ttlMs + keepMs; the µs clock stays below 2^53 until the year 2255.
-- The index is kept in advisory mode too, so that switching a deployment
-- to enforced locks covers the locks already held. Its HSET always
-- counts as a write for WATCH (even with the same value), which is what
-- lets the watch metadata strategy see any acquire by watching the index
-- alone. Its TTL is never below a lock's, so it outlives every lock it
-- lists and dies with the last one.
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  return {0, cur, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
-- Fields of expired locks are dropped here, so the index holds the live
-- locks plus those expired since the channel's last acquire.
local names = redis.call('HKEYS', KEYS[2])
for _, n in ipairs(names) do
  if n ~= ARGV[3] and redis.call('EXISTS', ARGV[4] .. n) == 0 then redis.call('HDEL', KEYS[2], n) end
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
local t = redis.call('TIME')
local token = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if last + 1 > token then token = last + 1 end
token = string.format('%.0f', token)
redis.call('SET', KEYS[3], token, 'PX', string.format('%.0f', tonumber(ARGV[2]) + tonumber(ARGV[5])))
return {1, tonumber(ARGV[2]), token}
