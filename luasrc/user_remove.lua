-- user_remove: forget conns of a user in the user's index, in the user's
-- slot, and announce the user offline when its last conn anywhere goes.
-- KEYS[1] index: the user's index hash (core.Keys.UserIndex)
-- ARGV[1] user: user id
-- ARGV[2] nowMs: the server's time, ms
-- ARGV[3] events: the user's event channel
-- ARGV[4] pub: the publish command, 'PUBLISH' or 'SPUBLISH' (sharded)
-- ARGV[5..] entries {entry, epoch}: fields to remove, each only while the epoch it holds is at most epoch
-- Returns {removed:int, offline:bool}
-- The epoch bound fences the removal to the incarnation of the conn that
-- the room removed: when the same conn id joined again meanwhile, its
-- entry holds a greater epoch and stays. offline is 1 when this call
-- removed the user's last entry and published offline; an emptied hash
-- no longer exists, so nothing is left behind.

-- pub is run as a command, so it is checked to be a publish command
-- before anything is written: a script's writes are not undone by a
-- later error. Redis 7 brought SPUBLISH and REDIS_VERSION_NUM together,
-- so an older server (or the embedded one) refuses sharded mode here
-- instead of failing after the writes.
local pub = ARGV[4]
if pub ~= 'PUBLISH' and pub ~= 'SPUBLISH' then
  return redis.error_reply("BAD_PUBLISH pub must be 'PUBLISH' or 'SPUBLISH', not '" .. tostring(pub) .. "'")
end
if pub == 'SPUBLISH' and (redis.REDIS_VERSION_NUM or 0) < 0x070000 then
  return redis.error_reply('BAD_PUBLISH SPUBLISH (sharded pub/sub) needs Redis 7 or later')
end
local removed = 0
for i = 5, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur and tonumber(cur) <= tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
if removed > 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call(pub, ARGV[3], '{"type":"offline","userId":' .. cjson.encode(ARGV[1]) .. ',"ts":' .. ARGV[2] .. '}')
  return {removed, 1}
end
return {removed, 0}
