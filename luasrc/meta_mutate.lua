-- meta_mutate: one metadata mutation (set, update or remove) of a channel:
-- lock check, majorRevision and item revision checks, the write,
-- majorRevision + 1 and the metadata event, atomically: one round trip.
-- KEYS[1] meta: the channel's meta hash
-- KEYS[2] lock: the named lock's key; read only when ARGV[10] is '1'
-- KEYS[3] index: the channel's lock index; read only when ARGV[11] is not ''
-- KEYS[4] fence: the named lock's fencing token key; read only when ARGV[12] is not ''
-- ARGV[1] op: 'set' | 'update' | 'remove'
-- ARGV[2] major: expected majorRevision, or '' for unchecked
-- ARGV[3] actor: acting user ('' = none): must own KEYS[2] when it is given
-- ARGV[4] stamp: ISO-8601 time to stamp as each written item's updated, or ''
-- ARGV[5] author: '1' to stamp each written item's author with ARGV[3], else ''
-- ARGV[6] events: the channel's meta events channel
-- ARGV[7] chanType: channel type
-- ARGV[8] chanName: channel name
-- ARGV[9] nowMs: the server's time, ms (the event's timestamp)
-- ARGV[10] named: '1' when the mutation names a lock (KEYS[2]), else ''
-- ARGV[11] enforced: the prefix of the channel's lock keys when locks are enforced, else ''
-- ARGV[12] token: the fencing token the writer holds the named lock under, or ''
-- ARGV[13..] items {key, value, revision}: revision '' = unchecked/default
-- Remove uses only the items' keys, and no items means remove all. With
-- no lock named, KEYS[2] is any key of the channel's slot (the lock
-- prefix), and KEYS[3] is given even when locks are advisory: a script's
-- keys are fixed; so is KEYS[4], the lock prefix too when no token is given.
-- Meta hash fields (see core/metahash.go):
--   major  majorRevision
--   v:<key> value   r:<key> revision   u:<key> updated   a:<key> author
-- An item exists iff its r: field does; major is the only other field.
-- Returns done {1, written:bool, hash:hash}
--       | locked {0, 'LOCKED'}
--       | fenced {0, 'FENCED', token:int}
--       | held {0, 'HELD', lock:str}
--       | major {0, 'MAJOR', major:int, hash:hash}
--       | revision {0, 'REVISION', key:str, revision:int, hash:hash}
--       | unknown {0, 'UNKNOWN', key:str}
--       | empty {0, 'EMPTY'}
-- done: hash is the meta hash as read, before the write (the caller
-- applies the request to it to know the record after: strategy's
-- written), written 0 when a remove found nothing;
-- fenced: token is the lock's last token (0: none kept), not the one
-- given, so a newer acquisition fenced the writer off; held: lock is a
-- live lock that bars the actor; major: the current majorRevision;
-- revision: key's stored revision; empty: an update of a channel without
-- items. A conflict (major, revision) carries the hash as read, so the
-- writer can retry without reading it again.
-- The hash is read once (HGETALL) and every check runs against that copy;
-- the write is one HSET (set, update) or HDEL + HSET (remove). Under
-- Redis 7.0 a redis.call costs 4,000 (HGET) to 13,000 (HGETALL of 3
-- fields) instructions and string.format 2,000, so the script makes three
-- calls on success, formats each number once and does not build the
-- record after: the hash as read and the request say what it is. The
-- success path costs 15% fewer instructions than reading the hash again.
-- Numbers leave as string.format('%.0f'); strings go through cjson.encode
-- only, so the event has exactly the fields of core.MetadataEvent.
local fmt = string.format
local meta, op, actor = KEYS[1], ARGV[1], ARGV[3]

local named = ARGV[10] == '1'
if named then
  local owner = redis.call('GET', KEYS[2])
  if actor == '' or not owner or owner ~= actor then return {0, 'LOCKED'} end
  -- The fence key is written by every acquire of this lock, so a token
  -- other than its value is one a later acquisition superseded (or one
  -- never handed out).
  if ARGV[12] ~= '' then
    local last = redis.call('GET', KEYS[4])
    if not last or last ~= ARGV[12] then return {0, 'FENCED', last or '0'} end
  end
end

-- Enforced: every live lock of the channel bars everyone but its holder,
-- and the holder must name a lock, so a write without lockName is never
-- mistaken for one made under the lock. Not only the named lock counts:
-- taking a second lock must not get round the first one's holder. The
-- index lists the names; the lock keys (same slot) say which are live.
if ARGV[11] ~= '' then
  for _, n in ipairs(redis.call('HKEYS', KEYS[3])) do
    local owner = redis.call('GET', ARGV[11] .. n)
    if owner and (not named or owner ~= actor) then return {0, 'HELD', n} end
  end
end

-- h: the hash as field, value, ...; at[field]: the value's index in h.
local h = redis.call('HGETALL', meta)
local at = {}
for i = 1, #h, 2 do at[h[i]] = i + 1 end
local cur = '0'
if at.major then cur = h[at.major] end
local major = tonumber(cur)
-- Equal strings are equal numbers: the common case needs no tonumber.
if ARGV[2] ~= '' and ARGV[2] ~= cur and tonumber(ARGV[2]) ~= major then return {0, 'MAJOR', fmt('%.0f', major), h} end

local stamp, author = ARGV[4], ''
if ARGV[5] == '1' then author = actor end
local w = {} -- the HSET (set, update) or HDEL (remove): field, value, ... or field, ...
local ev = {} -- the event's items, JSON

if op == 'set' then
  for i = 13, #ARGV, 3 do
    local rev = '1'
    if ARGV[i + 2] ~= '' and tonumber(ARGV[i + 2]) > 0 then rev = fmt('%.0f', tonumber(ARGV[i + 2])) end
    local k = ARGV[i]
    w[#w + 1] = 'v:' .. k; w[#w + 1] = ARGV[i + 1]; w[#w + 1] = 'r:' .. k; w[#w + 1] = rev
    if stamp ~= '' then w[#w + 1] = 'u:' .. k; w[#w + 1] = stamp end
    if author ~= '' then w[#w + 1] = 'a:' .. k; w[#w + 1] = author end
    ev[#ev + 1] = '{"key":' .. cjson.encode(k) .. ',"value":' .. cjson.encode(ARGV[i + 1]) .. ',"revision":' .. rev .. '}'
  end
  redis.call('DEL', meta)
elseif op == 'update' then
  local revs = {}
  for i = 13, #ARGV, 3 do
    local j = at['r:' .. ARGV[i]]
    if not j then
      if #h <= 2 then return {0, 'EMPTY'} end
      return {0, 'UNKNOWN', ARGV[i]}
    end
    local cur = tonumber(h[j])
    if ARGV[i + 2] ~= '' and tonumber(ARGV[i + 2]) ~= cur then return {0, 'REVISION', ARGV[i], h[j], h} end
    revs[i] = fmt('%.0f', cur + 1)
  end
  for i = 13, #ARGV, 3 do
    local k = ARGV[i]
    w[#w + 1] = 'v:' .. k; w[#w + 1] = ARGV[i + 1]; w[#w + 1] = 'r:' .. k; w[#w + 1] = revs[i]
    if stamp ~= '' then w[#w + 1] = 'u:' .. k; w[#w + 1] = stamp end
    if author ~= '' then w[#w + 1] = 'a:' .. k; w[#w + 1] = author end
    ev[#ev + 1] = '{"key":' .. cjson.encode(k) .. ',"value":' .. cjson.encode(ARGV[i + 1]) .. ',"revision":' .. revs[i] .. '}'
  end
elseif op == 'remove' then
  local keys = {}
  if #ARGV < 13 then
    for i = 1, #h, 2 do
      if string.sub(h[i], 1, 2) == 'r:' then keys[#keys + 1] = string.sub(h[i], 3) end
    end
    -- Byte-wise order, whatever the server's collation locale is.
    table.sort(keys, function(a, b)
      local n = math.min(#a, #b)
      for i = 1, n do
        local x, y = string.byte(a, i), string.byte(b, i)
        if x ~= y then return x < y end
      end
      return #a < #b
    end)
  else
    for i = 13, #ARGV, 3 do keys[#keys + 1] = ARGV[i] end
  end
  for _, k in ipairs(keys) do
    local r = at['r:' .. k]
    if r then
      at['r:' .. k] = nil -- a key named twice is removed once
      local v = at['v:' .. k]
      w[#w + 1] = 'v:' .. k; w[#w + 1] = 'r:' .. k; w[#w + 1] = 'u:' .. k; w[#w + 1] = 'a:' .. k
      ev[#ev + 1] = '{"key":' .. cjson.encode(k) .. ',"value":' .. cjson.encode(v and h[v] or '') .. ',"revision":' .. h[r] .. '}'
    end
  end
  if #ev == 0 then return {1, 0, h} end
  for i = 1, #w, 1000 do redis.call('HDEL', meta, unpack(w, i, math.min(i + 999, #w))) end
  w = {}
else
  return redis.error_reply('ERR meta_mutate: unknown op ' .. op)
end

major = fmt('%.0f', major + 1)
w[#w + 1] = 'major'; w[#w + 1] = major
-- In slices: unpack is bounded by the Lua stack.
for i = 1, #w, 1000 do redis.call('HSET', meta, unpack(w, i, math.min(i + 999, #w))) end

local e = '{"channelName":' .. cjson.encode(ARGV[8]) .. ',"channelType":' .. cjson.encode(ARGV[7]) ..
  ',"operation":"' .. op .. '","items":[' .. table.concat(ev, ',') ..
  '],"majorRevision":' .. major .. ',"timestamp":' .. ARGV[9]
if author ~= '' then e = e .. ',"authorUid":' .. cjson.encode(author) end
redis.call('PUBLISH', ARGV[6], e .. '}')
return {1, 1, h}
