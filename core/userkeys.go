package core

import "strings"

// User keys share the hash tag {user:U}, so the user index lives in the
// user's own slot, whatever rooms the user is in: no room script can
// update it on a cluster, which is why the service writes it in a second
// step (docs/DESIGN.md, "User index").
func (k Keys) user(user string) string { return k.Prefix + ":{user:" + user + "}:" }

// UserIndex is a hash of the user's live conns across every room: field
// UserEntry(room, conn), value the conn's epoch when it was recorded.
func (k Keys) UserIndex(user string) string { return k.user(user) + "conns" }

// UserEvents is the user's online/offline event channel.
func (k Keys) UserEvents(user string) string { return k.user(user) + "events" }

// UserEventsPattern matches the event channel of every user.
func (k Keys) UserEventsPattern() string { return k.Prefix + ":{user:*}:events" }

// ActiveUsers lists users that may have an index, so the repair pass can
// find entries whose conn is gone without SCAN; a user leaves it lazily,
// on a repair pass that finds its index empty.
func (k Keys) ActiveUsers() string { return k.Prefix + ":active_users" }

// UserEntry is the field of conn in room in a user index. Ids cannot hold
// control characters, so the newline cannot occur in either part.
func UserEntry(room, conn string) string { return room + "\n" + conn }

// SplitUserEntry is the inverse of UserEntry.
func SplitUserEntry(entry string) (room, conn string, ok bool) {
	room, conn, ok = strings.Cut(entry, "\n")
	return room, conn, ok && room != "" && conn != ""
}
