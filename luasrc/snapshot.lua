-- snapshot: every live connection of a room with its hash, in one
-- consistent read. Conns whose hash expired (not yet reaped) are left out.
-- KEYS[1] conns: the room's conns set
-- KEYS[2] seq: the room's sequence counter
-- ARGV[1] connPrefix: the room's conn key prefix (core.Keys.ConnPrefix)
-- Returns {seq:int, conns:idhashes}
-- seq is the room's last sequence number (0 when it has none): the
-- snapshot holds every event up to it and none after.
local snap = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HGETALL', ARGV[1] .. id)
  if #h > 0 then snap[#snap + 1] = {id, h} end
end
return {tonumber(redis.call('GET', KEYS[2]) or '0'), snap}
