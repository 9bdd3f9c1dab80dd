package core

import (
	"strconv"
	"strings"
	"sync"
)

// Keys builds every Redis key and channel name. Room keys share the hash
// tag {room:R} and channel keys {chan:T:N}, so each operation touches one
// cluster slot. IDs must have been validated (no '{', '}'; channel types
// no ':') before they reach here, or two rooms could share keys.
type Keys struct {
	Prefix string // default "prs"
}

func (k Keys) room(room string) string { return k.Prefix + ":{room:" + room + "}:" }

// ConnPrefix is the conn hash key without the conn id, for scripts that
// derive conn keys of their room.
func (k Keys) ConnPrefix(room string) string { return k.room(room) + "conn:" }

func (k Keys) Conn(room, conn string) string { return k.ConnPrefix(room) + conn }
func (k Keys) Conns(room string) string      { return k.room(room) + "conns" }
func (k Keys) Members(room string) string    { return k.room(room) + "members" }
func (k Keys) LastSeen(room string) string   { return k.room(room) + "last_seen" }
func (k Keys) ConnMeta(room string) string   { return k.room(room) + "conn_meta" }

// UserConns counts each user's conns in a room, so leave knows when the
// user's last conn is gone without scanning the room.
func (k Keys) UserConns(room string) string { return k.room(room) + "user_conns" }

// Gone remembers the last epoch of conns that left, so a rejoin still gets
// a strictly greater epoch; entries older than the reaper's lookback are
// pruned, since the clock has passed them.
func (k Keys) Gone(room string) string       { return k.room(room) + "gone" }
func (k Keys) RoomEvents(room string) string { return k.room(room) + "events" }

// Seq is the room's sequence counter: every presence change of the room
// takes its next number in the script that makes the change. It lives
// while the room has conns and expires the lookback after the room
// empties, like Gone; a counter that is gone restarts at Redis's clock in
// microseconds, so numbers of one room never go back.
func (k Keys) Seq(room string) string { return k.room(room) + "seq" }
func (k Keys) ActiveRooms() string    { return k.Prefix + ":active_rooms" }

// RoomEventsPattern matches the event channel of every room.
func (k Keys) RoomEventsPattern() string { return k.Prefix + ":{room:*}:events" }

// RoomKeys returns the room-wide keys of a room (the conn hashes aside).
func (k Keys) RoomKeys(room string) []string {
	return []string{k.Conns(room), k.Members(room), k.LastSeen(room), k.ConnMeta(room), k.UserConns(room), k.Gone(room), k.Seq(room)}
}

func (k Keys) channel(typ, name string) string { return k.Prefix + ":{chan:" + typ + ":" + name + "}:" }
func (k Keys) Meta(typ, name string) string    { return k.channel(typ, name) + "meta" }
func (k Keys) Lock(typ, name, lock string) string {
	return k.LockPrefix(typ, name) + lock
}

// LockPrefix is a channel's lock key without the lock name, for scripts
// that derive the keys of the locks LockIndex lists.
func (k Keys) LockPrefix(typ, name string) string { return k.channel(typ, name) + "lock:" }

// LockIndex is a hash of the names of a channel's locks (field: name,
// value: the owner that last took it), kept by the lock scripts so that
// enforced locks can find every lock of a channel in its own slot,
// without SCAN. A field may outlive its lock by up to the index's TTL;
// the lock key is the truth, the index only says where to look.
func (k Keys) LockIndex(typ, name string) string { return k.channel(typ, name) + "locks" }

// Fence holds the last fencing token handed out for a channel's lock
// name. It outlives the lock by a margin (see lock_acquire.lua) and then
// expires like every key of an empty channel; the next token is floored by
// the server's clock, so tokens keep growing across its expiry.
func (k Keys) Fence(typ, name, lock string) string { return k.channel(typ, name) + "fence:" + lock }

func (k Keys) MetaEvents(typ, name string) string { return k.channel(typ, name) + "meta_events" }

// MetaEventsPattern matches the metadata event channel of every channel.
func (k Keys) MetaEventsPattern() string { return k.Prefix + ":{chan:*}:meta_events" }

// RoomMetaEvents is the channel carrying the metadata events of every
// channel named room (whatever its type) when servers subscribe per room
// (Config.PubSub "channels" or "sharded"): a socket in room R receives
// the metadata events of the channels named R (docs/PROTOCOL.md), and a
// server subscribes per room, not per channel type, which it cannot know.
// Metadata scripts publish it with classic PUBLISH in every mode: its
// hash tag is the room's, not the channel's, and a script may SPUBLISH
// only to its own keys' slot.
func (k Keys) RoomMetaEvents(room string) string { return k.room(room) + "meta_events" }

// RoomMetaEventsPattern matches RoomMetaEvents of every room.
func (k Keys) RoomMetaEventsPattern() string { return k.Prefix + ":{room:*}:meta_events" }

// ConnKeys are the keys and channel one conn's heartbeats touch, built
// once (a socket's room and conn never change after join) instead of by
// four concatenations per heartbeat. Build it with Keys.ConnKeys and pass
// it in HeartbeatRequest.ConnKeys; it is immutable and safe to share.
type ConnKeys struct {
	prefix, room, conn string
	hb                 [4]string // heartbeat.lua's KEYS: conn hash, last_seen, conn_meta, seq
	events             string
	epoch              epochCache
}

// ConnKeys builds the keys of conn in room; the ids must be valid as for
// every other method of Keys.
func (k Keys) ConnKeys(room, conn string) *ConnKeys {
	base := k.room(room)
	// One string holds every key, each a substring of it: one allocation
	// instead of one or two per key.
	const connPart, lastSeen, connMeta, seq, events = "conn:", "last_seen", "conn_meta", "seq", "events"
	var b strings.Builder
	b.Grow(5*len(base) + len(connPart) + len(conn) + len(lastSeen) + len(connMeta) + len(seq) + len(events))
	cut := func(parts ...string) string {
		start := b.Len()
		for _, p := range parts {
			b.WriteString(p)
		}
		return b.String()[start:]
	}
	ck := &ConnKeys{prefix: k.Prefix, room: room, conn: conn}
	ck.hb[0] = cut(base, connPart, conn)
	ck.hb[1] = cut(base, lastSeen)
	ck.hb[2] = cut(base, connMeta)
	ck.hb[3] = cut(base, seq)
	ck.events = cut(base, events)
	return ck
}

func (c *ConnKeys) Room() string       { return c.room }
func (c *ConnKeys) Conn() string       { return c.conn }
func (c *ConnKeys) ConnKey() string    { return c.hb[0] }
func (c *ConnKeys) LastSeen() string   { return c.hb[1] }
func (c *ConnKeys) ConnMeta() string   { return c.hb[2] }
func (c *ConnKeys) Seq() string        { return c.hb[3] }
func (c *ConnKeys) RoomEvents() string { return c.events }

// FormatEpoch formats a conn's epoch, reusing the last string while the
// epoch is unchanged (it changes only on rejoin).
func (c *ConnKeys) FormatEpoch(n int64) string { return c.epoch.format(n) }

// Fits reports whether c holds the keys k would build for room and conn;
// a request carrying keys of another conn, room or prefix gets its keys
// built as if it carried none, so a mismatch can never touch another
// conn's keys. A nil c fits nothing.
func (c *ConnKeys) Fits(k Keys, room, conn string) bool {
	return c != nil && c.prefix == k.Prefix && c.room == room && c.conn == conn
}

// epochCache is a conn's epoch as last formatted. A miss
// costs no more than strconv (the keys of a one-off Heartbeat always
// miss); the lock is only tried, since heartbeats of one conn rarely
// overlap and one that finds it taken formats on its own.
type epochCache struct {
	mu sync.Mutex
	n  int64
	s  string
}

func (c *epochCache) format(n int64) string {
	if !c.mu.TryLock() {
		return strconv.FormatInt(n, 10)
	}
	defer c.mu.Unlock()
	if c.s == "" || c.n != n {
		c.n, c.s = n, strconv.FormatInt(n, 10)
	}
	return c.s
}
