-- heartbeat: fencing check, state patch, last_seen, TTL, reaper index,
-- conn_meta and the update event, atomically: one round trip.
-- KEYS[1] connHash: the conn hash
-- KEYS[2] lastSeen: the room's last_seen zset
-- KEYS[3] connMeta: the room's conn_meta hash
-- KEYS[4] seq: the room's sequence counter
-- ARGV[1] conn: conn id
-- ARGV[2] nowMs: the server's time, ms
-- ARGV[3] ttlMs: the conn hash's TTL, ms
-- ARGV[4] epoch: the caller's epoch, or '' when it sent none
-- ARGV[5] events: the room's event channel
-- ARGV[6] room: room id
-- ARGV[7] pub: the publish command, 'PUBLISH' or 'SPUBLISH' (sharded)
-- ARGV[8..] patch {key, value}: top-level state keys and their canonical JSON
-- Returns ok {1, changed:bool, epoch:int}
--       | notFound {0, 'NOTFOUND'}
--       | stale {0, 'STALE', stored:int}
-- State values are compared as the bytes Go encoded; nothing is re-encoded
-- here, since cjson would reorder keys and round numbers. Only a heartbeat
-- that changed the state takes a seq (its update event's).
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
local cur = redis.call('HMGET', KEYS[1], 'epoch', 'user')
if not cur[1] then return {0, 'NOTFOUND'} end
local stored = tonumber(cur[1])
if ARGV[4] ~= '' then
  local e = tonumber(ARGV[4])
  if e < stored then return {0, 'STALE', stored} end
  if e > stored then
    stored = e
    redis.call('HSET', KEYS[1], 'epoch', fmt(e))
    redis.call('HSET', KEYS[3], ARGV[1], fmt(e) .. ':' .. cur[2])
  end
end

local changed = 0
for i = 8, #ARGV, 2 do
  local f = 's:' .. ARGV[i]
  if redis.call('HGET', KEYS[1], f) ~= ARGV[i + 1] then
    redis.call('HSET', KEYS[1], f, ARGV[i + 1])
    changed = 1
  end
end
redis.call('HSET', KEYS[1], 'last_seen_ms', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])

if changed == 1 then
  local h = redis.call('HGETALL', KEYS[1])
  local keys, vals = {}, {}
  for i = 1, #h, 2 do
    if string.sub(h[i], 1, 2) == 's:' then
      local k = string.sub(h[i], 3)
      keys[#keys + 1] = k
      vals[k] = h[i + 1]
    end
  end
  local seq = nextSeq(KEYS[4])
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = cjson.encode(k) .. ':' .. vals[k] end
  redis.call(pub, ARGV[5], '{"type":"update","roomId":' .. cjson.encode(ARGV[6]) ..
    ',"userId":' .. cjson.encode(cur[2]) .. ',"connId":' .. cjson.encode(ARGV[1]) ..
    ',"state":{' .. table.concat(parts, ',') .. '},"ts":' .. ARGV[2] .. ',"epoch":' .. fmt(stored) .. ',"seq":' .. fmt(seq) .. '}')
end
return {1, changed, stored}
