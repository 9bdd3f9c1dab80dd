-- user_remove: forget conns of a user in the user's index, in the user's
-- slot, and announce the user offline when its last conn anywhere goes.
-- KEYS[1] index: the user's index hash (core.Keys.UserIndex)
-- ARGV[1] user: user id
-- ARGV[2] nowMs: the server's time, ms
-- ARGV[3] events: the user's event channel
-- ARGV[4..] entries {entry, epoch}: fields to remove, each only while the epoch it holds is at most epoch
-- Returns {removed:int, offline:bool}
-- The epoch bound fences the removal to the incarnation of the conn that
-- the room removed: when the same conn id joined again meanwhile, its
-- entry holds a greater epoch and stays. offline is 1 when this call
-- removed the user's last entry and published offline; an emptied hash
-- no longer exists, so nothing is left behind.
local removed = 0
for i = 4, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur and tonumber(cur) <= tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
if removed > 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('PUBLISH', ARGV[3], '{"type":"offline","userId":' .. cjson.encode(ARGV[1]) .. ',"ts":' .. ARGV[2] .. '}')
  return {removed, 1}
end
return {removed, 0}
