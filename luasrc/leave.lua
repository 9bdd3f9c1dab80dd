-- leave: remove a connection from every index of its room and publish
-- leave, atomically. Idempotent: a conn that is not there changes nothing
-- and publishes nothing.
-- KEYS[1] conns: the room's conns set
-- KEYS[2] members: the room's members set
-- KEYS[3] lastSeen: the room's last_seen zset
-- KEYS[4] connMeta: the room's conn_meta hash
-- KEYS[5] userConns: the room's user_conns hash
-- KEYS[6] gone: the room's gone zset
-- KEYS[7] connHash: the conn hash
-- KEYS[8] seq: the room's sequence counter
-- ARGV[1] conn: conn id
-- ARGV[2] room: room id
-- ARGV[3] nowMs: the server's time, ms
-- ARGV[4] events: the room's event channel
-- ARGV[5] lookbackMs: the reaper's lookback, ms
-- ARGV[6] pub: the publish command, 'PUBLISH' or 'SPUBLISH' (sharded)
-- Returns {left:bool, remaining:int}
-- remaining counts the conns left in the room. The leave takes the room's
-- next seq; the last one out starts the counter's expiry (the lookback).
local conn = ARGV[1]
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

-- The gone index matters only until the clock is past its largest epoch by
-- the lookback (see reap.lua): it expires then, so a room that emptied
-- leaves nothing behind, and what the clock has passed is pruned now.
local function tidyGone(key, now, lookback)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - lookback))
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #top == 2 then redis.call('PEXPIRE', key, fmt(tonumber(top[2]) - now + lookback)) end
end

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
local h = redis.call('HGETALL', KEYS[7])
local inroom = redis.call('SISMEMBER', KEYS[1], conn) == 1
if not inroom and #h == 0 then
  return {0, redis.call('SCARD', KEYS[1])}
end

local f, keys = {}, {}
for i = 1, #h, 2 do
  f[h[i]] = h[i + 1]
  if string.sub(h[i], 1, 2) == 's:' then keys[#keys + 1] = string.sub(h[i], 3) end
end
local user, epoch = f['user'], tonumber(f['epoch'] or '-1')
local meta = redis.call('HGET', KEYS[4], conn)
if meta then
  local sep = string.find(meta, ':', 1, true)
  local e = tonumber(string.sub(meta, 1, sep - 1))
  if e > epoch then epoch = e end
  if not user then user = string.sub(meta, sep + 1) end
end

redis.call('DEL', KEYS[7])
if redis.call('SREM', KEYS[1], conn) == 1 and user then
  if redis.call('HINCRBY', KEYS[5], user, -1) <= 0 then
    redis.call('HDEL', KEYS[5], user)
    redis.call('SREM', KEYS[2], user)
  end
end
redis.call('ZREM', KEYS[3], conn)
redis.call('HDEL', KEYS[4], conn)
if epoch >= 0 then redis.call('ZADD', KEYS[6], fmt(epoch), conn) end
tidyGone(KEYS[6], tonumber(ARGV[3]), tonumber(ARGV[5]))

local seq = nextSeq(KEYS[8])
local remaining = redis.call('SCARD', KEYS[1])
if remaining == 0 then redis.call('PEXPIRE', KEYS[8], ARGV[5]) end

local state = 'null'
if #h > 0 then
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = cjson.encode(k) .. ':' .. f['s:' .. k] end
  state = '{' .. table.concat(parts, ',') .. '}'
end
redis.call(pub, ARGV[4], '{"type":"leave","roomId":' .. cjson.encode(ARGV[2]) ..
  ',"userId":' .. cjson.encode(user or '') .. ',"connId":' .. cjson.encode(conn) ..
  ',"state":' .. state .. ',"ts":' .. ARGV[3] .. ',"epoch":' .. fmt(epoch) .. ',"seq":' .. fmt(seq) .. '}')
return {1, remaining}
