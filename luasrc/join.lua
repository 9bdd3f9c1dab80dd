-- join: add a connection to a room, or rejoin it, with a fresh epoch, and
-- return the room's snapshot, atomically in the room's slot.
-- KEYS[1] conns: the room's conns set
-- KEYS[2] members: the room's members set
-- KEYS[3] lastSeen: the room's last_seen zset
-- KEYS[4] connMeta: the room's conn_meta hash
-- KEYS[5] userConns: the room's user_conns hash
-- KEYS[6] gone: the room's gone zset
-- KEYS[7] connHash: the conn hash
-- KEYS[8] seq: the room's sequence counter
-- ARGV[1] conn: conn id
-- ARGV[2] user: user id
-- ARGV[3] room: room id
-- ARGV[4] nowMs: the server's time, ms
-- ARGV[5] ttlMs: the conn hash's TTL, ms
-- ARGV[6] events: the room's event channel
-- ARGV[7] connPrefix: the room's conn key prefix (core.Keys.ConnPrefix)
-- ARGV[8] pub: the publish command, 'PUBLISH' or 'SPUBLISH' (sharded)
-- ARGV[9..] state {key, value}: top-level state keys and their canonical JSON
-- Returns {epoch:int, snapshot:idhashes, seq:int}
-- The new epoch is max(previous + 1, now): previous is the largest epoch
-- the conn hash, conn_meta or the gone index remember, so it strictly grows.
-- The snapshot is every live conn of the room with its hash, this one too;
-- seq is the join event's, so the snapshot holds every event up to seq.
-- The counter never expires while the room has conns.

-- pub is run as a command, so it is checked to be a publish command
-- before anything is written: a script's writes are not undone by a
-- later error. Redis 7 brought SPUBLISH and REDIS_VERSION_NUM together,
-- so an older server (or the embedded one) refuses sharded mode here
-- instead of failing after the writes.
local pub = ARGV[8]
if pub ~= 'PUBLISH' and pub ~= 'SPUBLISH' then
  return redis.error_reply("BAD_PUBLISH pub must be 'PUBLISH' or 'SPUBLISH', not '" .. tostring(pub) .. "'")
end
if pub == 'SPUBLISH' and (redis.REDIS_VERSION_NUM or 0) < 0x070000 then
  return redis.error_reply('BAD_PUBLISH SPUBLISH (sharded pub/sub) needs Redis 7 or later')
end
local conn, user, room = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(ARGV[4])

local function fmt(n) return string.format('%.0f', n) end
-- nextSeq: the room's next sequence number, one more than the last; when
-- the counter is gone (the room was empty past the lookback, or Redis lost
-- it) it restarts at Redis's clock in microseconds, above every number it
-- handed out before (docs/DESIGN.md, room sequence numbers).
local function nextSeq(key)
  local s = redis.call('INCR', key)
  if s == 1 then
    local t = redis.call('TIME')
    s = tonumber(t[1]) * 1000000 + tonumber(t[2])
    redis.call('SET', key, string.format('%.0f', s))
  end
  return s
end

local prev = -1
local cur = redis.call('HMGET', KEYS[7], 'epoch', 'user')
if cur[1] then prev = tonumber(cur[1]) end
local olduser = cur[2]
local meta = redis.call('HGET', KEYS[4], conn)
if meta then
  local sep = string.find(meta, ':', 1, true)
  local e = tonumber(string.sub(meta, 1, sep - 1))
  if e > prev then prev = e end
  if not olduser then olduser = string.sub(meta, sep + 1) end
end
local g = redis.call('ZSCORE', KEYS[6], conn)
if g and tonumber(g) > prev then prev = tonumber(g) end
-- 2^53-1 is the last integer a double (and JavaScript) holds exactly.
if prev >= 9007199254740991 then
  return redis.error_reply('EPOCH_EXHAUSTED conn ' .. conn .. ' holds the largest epoch; join with a new conn id')
end
local epoch = prev + 1
if now > epoch then epoch = now end

local inroom = redis.call('SISMEMBER', KEYS[1], conn) == 1
if not (inroom and olduser == user) then
  if inroom and olduser then
    if redis.call('HINCRBY', KEYS[5], olduser, -1) <= 0 then
      redis.call('HDEL', KEYS[5], olduser)
      redis.call('SREM', KEYS[2], olduser)
    end
  end
  redis.call('SADD', KEYS[1], conn)
  redis.call('HINCRBY', KEYS[5], user, 1)
  redis.call('SADD', KEYS[2], user)
end

redis.call('DEL', KEYS[7])
local fields = {'user', user, 'room', room, 'epoch', fmt(epoch), 'last_seen_ms', ARGV[4]}
local keys, vals = {}, {}
for i = 9, #ARGV, 2 do
  fields[#fields + 1] = 's:' .. ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  keys[#keys + 1] = ARGV[i]
  vals[ARGV[i]] = ARGV[i + 1]
end
redis.call('HSET', KEYS[7], unpack(fields))
redis.call('PEXPIRE', KEYS[7], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[4], conn)
redis.call('HSET', KEYS[4], conn, fmt(epoch) .. ':' .. user)
redis.call('ZREM', KEYS[6], conn)

local seq = nextSeq(KEYS[8])
redis.call('PERSIST', KEYS[8])

table.sort(keys)
local parts = {}
for _, k in ipairs(keys) do parts[#parts + 1] = cjson.encode(k) .. ':' .. vals[k] end
redis.call(pub, ARGV[6], '{"type":"join","roomId":' .. cjson.encode(room) ..
  ',"userId":' .. cjson.encode(user) .. ',"connId":' .. cjson.encode(conn) ..
  ',"state":{' .. table.concat(parts, ',') .. '},"ts":' .. ARGV[4] .. ',"epoch":' .. fmt(epoch) .. ',"seq":' .. fmt(seq) .. '}')

local snap = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HGETALL', ARGV[7] .. id)
  if #h > 0 then snap[#snap + 1] = {id, h} end
end
return {epoch, snap, seq}
