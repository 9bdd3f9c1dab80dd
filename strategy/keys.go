package strategy

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
func (k Keys) ActiveRooms() string           { return k.Prefix + ":active_rooms" }

// RoomEventsPattern matches the event channel of every room.
func (k Keys) RoomEventsPattern() string { return k.Prefix + ":{room:*}:events" }

// RoomKeys returns the keys room scripts take, in the order the join,
// leave and reap scripts document.
func (k Keys) RoomKeys(room string) []string {
	return []string{k.Conns(room), k.Members(room), k.LastSeen(room), k.ConnMeta(room), k.UserConns(room), k.Gone(room)}
}

func (k Keys) channel(typ, name string) string { return k.Prefix + ":{chan:" + typ + ":" + name + "}:" }
func (k Keys) Meta(typ, name string) string    { return k.channel(typ, name) + "meta" }
func (k Keys) Lock(typ, name, lock string) string {
	return k.channel(typ, name) + "lock:" + lock
}
func (k Keys) MetaEvents(typ, name string) string { return k.channel(typ, name) + "meta_events" }

// MetaEventsPattern matches the metadata event channel of every channel.
func (k Keys) MetaEventsPattern() string { return k.Prefix + ":{chan:*}:meta_events" }
