-- reap: remove a room's expired connections and publish leave for each,
-- atomically in the room's slot, so reapers on many nodes racing on one room
-- remove each conn exactly once, and a conn that heartbeated (its hash
-- exists again) is never removed.
-- KEYS[1] conns: the room's conns set
-- KEYS[2] members: the room's members set
-- KEYS[3] lastSeen: the room's last_seen zset
-- KEYS[4] connMeta: the room's conn_meta hash
-- KEYS[5] userConns: the room's user_conns hash
-- KEYS[6] gone: the room's gone zset
-- KEYS[7] seq: the room's sequence counter
-- ARGV[1] room: room id
-- ARGV[2] nowMs: the server's time, ms
-- ARGV[3] cutoffMs: now - the reaper's lookback, ms
-- ARGV[4] events: the room's event channel
-- ARGV[5] connPrefix: the room's conn key prefix (core.Keys.ConnPrefix)
-- ARGV[6] limit: most conns to examine in this call
-- ARGV[7] pub: the publish command, 'PUBLISH' or 'SPUBLISH' (sharded)
-- Returns {removed:int, remaining:int, more:bool, reaped:hash}
-- remaining counts the conns left in the room; more is 1 when more
-- candidates may remain; reaped maps each removed conn to its conn_meta
-- value, "epoch:user", so the caller can update those users' indexes.
-- Each leave takes the room's next seq; a pass that empties the room starts
-- the counter's expiry (the lookback).
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

-- pub is run as a command, so it is checked to be a publish command
-- before anything is written: a script's writes are not undone by a
-- later error. Redis 7 brought SPUBLISH and REDIS_VERSION_NUM together,
-- so an older server (or the embedded one) refuses sharded mode here
-- instead of failing after the writes.
local pub = ARGV[7]
if pub ~= 'PUBLISH' and pub ~= 'SPUBLISH' then
  return redis.error_reply("BAD_PUBLISH pub must be 'PUBLISH' or 'SPUBLISH', not '" .. tostring(pub) .. "'")
end
if pub == 'SPUBLISH' and (redis.REDIS_VERSION_NUM or 0) < 0x070000 then
  return redis.error_reply('BAD_PUBLISH SPUBLISH (sharded pub/sub) needs Redis 7 or later')
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[6]))
local removed = 0
local reaped = {}
for _, conn in ipairs(ids) do
  if redis.call('EXISTS', ARGV[5] .. conn) == 0 then
    local user, epoch = nil, -1
    local meta = redis.call('HGET', KEYS[4], conn)
    if meta then
      local sep = string.find(meta, ':', 1, true)
      epoch = tonumber(string.sub(meta, 1, sep - 1))
      user = string.sub(meta, sep + 1)
    end
    if redis.call('SREM', KEYS[1], conn) == 1 and user then
      if redis.call('HINCRBY', KEYS[5], user, -1) <= 0 then
        redis.call('HDEL', KEYS[5], user)
        redis.call('SREM', KEYS[2], user)
      end
    end
    redis.call('ZREM', KEYS[3], conn)
    redis.call('HDEL', KEYS[4], conn)
    if epoch >= 0 then redis.call('ZADD', KEYS[6], fmt(epoch), conn) end
    local seq = nextSeq(KEYS[7])
    redis.call(pub, ARGV[4], '{"type":"leave","roomId":' .. cjson.encode(ARGV[1]) ..
      ',"userId":' .. cjson.encode(user or '') .. ',"connId":' .. cjson.encode(conn) ..
      ',"state":null,"ts":' .. ARGV[2] .. ',"epoch":' .. fmt(epoch) .. ',"seq":' .. fmt(seq) .. '}')
    removed = removed + 1
    if meta then
      reaped[#reaped + 1] = conn
      reaped[#reaped + 1] = meta
    end
  end
end
-- Epochs below the cutoff are below any future now, so a rejoin no longer
-- needs them to stay strictly greater; the index expires when the clock
-- has passed its largest epoch by the lookback, so a room that emptied
-- leaves nothing behind.
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', ARGV[3])
local top = redis.call('ZRANGE', KEYS[6], -1, -1, 'WITHSCORES')
if #top == 2 then redis.call('PEXPIRE', KEYS[6], fmt(tonumber(top[2]) - tonumber(ARGV[3]))) end
local remaining = redis.call('SCARD', KEYS[1])
-- Only a pass that removed someone: a pass over a room already empty must
-- not push the expiry back.
if removed > 0 and remaining == 0 then
  redis.call('PEXPIRE', KEYS[7], fmt(tonumber(ARGV[2]) - tonumber(ARGV[3])))
end
local more = 0
if #ids == tonumber(ARGV[6]) then more = 1 end
return {removed, remaining, more, reaped}
