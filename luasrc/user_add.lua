-- user_add: record one conn of a user in the user's index, in the user's
-- slot, and announce the user online when this is its first conn anywhere.
-- KEYS[1] index: the user's index hash (core.Keys.UserIndex)
-- ARGV[1] entry: the conn's field, core.UserEntry(room, conn)
-- ARGV[2] epoch: the conn's epoch, as the room's join returned it
-- ARGV[3] user: user id
-- ARGV[4] nowMs: the server's time, ms
-- ARGV[5] events: the user's event channel
-- ARGV[6] pub: the publish command, 'PUBLISH' or 'SPUBLISH' (sharded)
-- Returns {online:bool, conns:int}
-- online is 1 when this call took the user from no conn to one and
-- published online; conns counts the user's conns after the call. The
-- decision is made here, in the user's slot, so two nodes adding the
-- user's first two conns at once never both announce it. An entry that
-- already holds the epoch, or a greater one, is left alone: a late add of
-- an older join of the same conn id must not undo a newer one.

-- pub is run as a command, so it is checked to be a publish command
-- before anything is written: a script's writes are not undone by a
-- later error. Redis 7 brought SPUBLISH and REDIS_VERSION_NUM together,
-- so an older server (or the embedded one) refuses sharded mode here
-- instead of failing after the writes.
local pub = ARGV[6]
if pub ~= 'PUBLISH' and pub ~= 'SPUBLISH' then
  return redis.error_reply("BAD_PUBLISH pub must be 'PUBLISH' or 'SPUBLISH', not '" .. tostring(pub) .. "'")
end
if pub == 'SPUBLISH' and (redis.REDIS_VERSION_NUM or 0) < 0x070000 then
  return redis.error_reply('BAD_PUBLISH SPUBLISH (sharded pub/sub) needs Redis 7 or later')
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then
  return {0, redis.call('HLEN', KEYS[1])}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local n = redis.call('HLEN', KEYS[1])
local first = (not cur) and n == 1
if first then
  redis.call(pub, ARGV[5], '{"type":"online","userId":' .. cjson.encode(ARGV[3]) .. ',"ts":' .. ARGV[4] .. '}')
  return {1, n}
end
return {0, n}
