package socketio_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/socketio"
)

func userEvent(typ, user string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["type"] == typ && m["userId"] == user }
}

// Issue 14 (4) on the wire: presence:user answers where a user is across
// nodes; presence:watchUser delivers user:event online when the user's
// first conn anywhere appears and offline when its last goes, once each,
// to each watching socket, until presence:unwatchUser.
func TestUserPresenceTwoNodes(t *testing.T) {
	for _, srv := range redistest.Targets(t) {
		for _, backend := range []string{"rueidis", "goredis"} {
			t.Run(srv.Name+"/"+backend, func(t *testing.T) {
				prefix := redistest.Prefix(t)
				na := startNode(t, srv, nodeConfig{Backend: backend, Prefix: prefix})
				nb := startNode(t, srv, nodeConfig{Backend: backend, Prefix: prefix})
				room1, room2 := "r1-"+prefix, "r2-"+prefix
				w := dial(t, na.url)
				w2 := dial(t, nb.url)
				ack := w.ok(socketio.EventWatchUser, map[string]any{"userId": "alice"})
				jsonEq(t, ack, map[string]any{"ok": true, "userId": "alice", "online": false, "rooms": []any{}})
				w.ok(socketio.EventWatchUser, map[string]any{"userId": "alice"}) // twice: still one delivery
				w2.ok(socketio.EventWatchUser, map[string]any{"userId": "alice"})

				b := dial(t, nb.url)
				b.ok("presence:join", map[string]any{"roomId": room1, "userId": "alice"})
				ev := w.waitEvent(socketio.EventUserEvent, userEvent("online", "alice"))
				if num(ev["ts"]) <= 0 || len(ev) != 3 {
					t.Fatalf("user:event %v, want {type, userId, ts}", ev)
				}
				w2.waitEvent(socketio.EventUserEvent, userEvent("online", "alice"))
				c := dial(t, na.url)
				c.ok("presence:join", map[string]any{"roomId": room2, "userId": "alice"})
				c2 := dial(t, na.url)
				c2.ok("presence:join", map[string]any{"roomId": room1, "userId": "alice"})

				got := w2.ok(socketio.EventUser, map[string]any{"userId": "alice"})
				ids := []string{b.id(), c2.id()}
				if ids[0] > ids[1] {
					ids[0], ids[1] = ids[1], ids[0]
				}
				rooms := []any{map[string]any{"roomId": room1, "conns": []any{ids[0], ids[1]}}, map[string]any{"roomId": room2, "conns": []any{c.id()}}}
				if room2 < room1 {
					rooms[0], rooms[1] = rooms[1], rooms[0]
				}
				jsonEq(t, got, map[string]any{"ok": true, "userId": "alice", "online": true, "rooms": rooms})

				b.close()
				c.ok("presence:leave")
				w2.ok(socketio.EventUnwatchUser, map[string]any{"userId": "alice"})
				c2.ok("presence:leave")
				w.waitEvent(socketio.EventUserEvent, userEvent("offline", "alice"))
				w.noEvent(300*time.Millisecond, socketio.EventUserEvent, nil)
				w2.noEvent(100*time.Millisecond, socketio.EventUserEvent, userEvent("offline", "alice"))
				got = w.ok(socketio.EventUser, map[string]any{"userId": "alice"})
				jsonEq(t, got, map[string]any{"ok": true, "userId": "alice", "online": false, "rooms": []any{}})
			})
		}
	}
}

func TestUserPresenceValidationAndLimit(t *testing.T) {
	n := startNode(t, redistest.Embedded(t), nodeConfig{Options: socketio.Options{MaxWatchedUsers: 2}})
	a := dial(t, n.url)
	for _, ev := range []string{socketio.EventUser, socketio.EventWatchUser, socketio.EventUnwatchUser} {
		for _, p := range []any{nil, "alice", map[string]any{}, map[string]any{"userId": 5}, map[string]any{"userId": ""},
			map[string]any{"userId": "a", "roomId": "r"}} {
			a.fail(socketio.CodePresenceInvalid, ev, p)
		}
	}
	for _, ev := range []string{socketio.EventUser, socketio.EventWatchUser} {
		for _, id := range []string{"a{b", "x}", strings.Repeat("u", 300)} {
			a.fail(socketio.CodePresenceInvalid, ev, map[string]any{"userId": id})
		}
	}
	// The refused watches took no slot: two fit.
	a.ok(socketio.EventWatchUser, map[string]any{"userId": "u1"})
	a.ok(socketio.EventWatchUser, map[string]any{"userId": "u2"})
	a.ok(socketio.EventWatchUser, map[string]any{"userId": "u2"})
	r := a.fail(socketio.CodePresenceInvalid, socketio.EventWatchUser, map[string]any{"userId": "u3"})
	if !strings.Contains(fmt.Sprint(r["error"]), "watches 2 users") {
		t.Fatalf("limit refusal %v", r)
	}
	a.ok(socketio.EventUnwatchUser, map[string]any{"userId": "u1"})
	a.ok(socketio.EventUnwatchUser, map[string]any{"userId": "u1"})
	a.ok(socketio.EventWatchUser, map[string]any{"userId": "u3"})
	// Only the watched users' events arrive.
	b := dial(t, n.url)
	b.ok("presence:join", map[string]any{"roomId": "r", "userId": "u1"})
	c := dial(t, n.url)
	c.ok("presence:join", map[string]any{"roomId": "r", "userId": "u3"})
	a.waitEvent(socketio.EventUserEvent, userEvent("online", "u3"))
	a.noEvent(200*time.Millisecond, socketio.EventUserEvent, userEvent("online", "u1"))
}

// A server whose service runs without the user index refuses the user
// events with PRESENCE_INVALID rather than answering "offline".
func TestUserPresenceIndexDisabled(t *testing.T) {
	n := startNode(t, redistest.Embedded(t), nodeConfig{DisableUserIndex: true})
	a := dial(t, n.url)
	a.ok("presence:join", map[string]any{"roomId": "r", "userId": "u"})
	a.fail(socketio.CodePresenceInvalid, socketio.EventUser, map[string]any{"userId": "u"})
	a.fail(socketio.CodePresenceInvalid, socketio.EventWatchUser, map[string]any{"userId": "u"})
}
