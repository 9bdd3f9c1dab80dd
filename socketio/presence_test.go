package socketio_test

import (
	"testing"

	"github.com/realtime-message/presence/internal/redistest"
)

// presenceSuite covers presence:join, presence:heartbeat, presence:leave,
// presence:event and disconnect, with every error of docs/PROTOCOL.md.
func presenceSuite(t *testing.T, n *node) {
	t.Run("JoinHeartbeatLeave", func(t *testing.T) { testJoinHeartbeatLeave(t, n) })
	t.Run("JoinErrors", func(t *testing.T) { testJoinErrors(t, n) })
	t.Run("HeartbeatErrors", func(t *testing.T) { testHeartbeatErrors(t, n) })
	t.Run("DisconnectLeaves", func(t *testing.T) { testDisconnectLeaves(t, n) })
}

func TestPresenceEmbedded(t *testing.T) {
	presenceSuite(t, startNode(t, redistest.Embedded(t), nodeConfig{}))
}

func testJoinHeartbeatLeave(t *testing.T, n *node) {
	room := "room-" + redistest.Prefix(t)
	a := dial(t, n.url)
	b := dial(t, n.url)

	ja := a.ok("presence:join", map[string]any{"roomId": room, "userId": "alice", "state": map[string]any{"mood": "happy", "n": 1}})
	self := ja["self"].(map[string]any)
	if self["connId"] != a.id() || num(self["epoch"]) <= 0 {
		t.Fatalf("join self = %v, want connId %s and an epoch", self, a.id())
	}
	snap := ja["snapshot"].([]any)
	if len(snap) != 1 {
		t.Fatalf("snapshot %v, want only self", snap)
	}
	e := snap[0].(map[string]any)
	for _, k := range []string{"connId", "userId", "state", "lastSeenMs", "epoch"} {
		if _, ok := e[k]; !ok {
			t.Errorf("snapshot entry %v lacks %s", e, k)
		}
	}
	jsonEq(t, e["state"], map[string]any{"mood": "happy", "n": 1})
	if e["userId"] != "alice" || num(e["epoch"]) != num(self["epoch"]) {
		t.Fatalf("snapshot entry %v", e)
	}
	// The joiner gets its own join event.
	ev := a.waitEvent("presence:event", presenceEvent("join", a.id()))
	for _, k := range []string{"type", "roomId", "userId", "connId", "state", "ts", "epoch"} {
		if _, ok := ev[k]; !ok {
			t.Errorf("event %v lacks %s", ev, k)
		}
	}
	if ev["roomId"] != room || ev["userId"] != "alice" {
		t.Fatalf("join event %v", ev)
	}

	jb := b.ok("presence:join", map[string]any{"roomId": room, "userId": "bob"})
	if len(jb["snapshot"].([]any)) != 2 {
		t.Fatalf("bob's snapshot %v, want 2 entries", jb["snapshot"])
	}
	a.waitEvent("presence:event", presenceEvent("join", b.id()))
	epochB := num(jb["self"].(map[string]any)["epoch"])

	// Heartbeat without payload, with an empty payload, with the epoch.
	hb := b.ok("presence:heartbeat")
	if hb["changed"] != false || num(hb["epoch"]) != epochB {
		t.Fatalf("heartbeat ack %v", hb)
	}
	b.ok("presence:heartbeat", map[string]any{})
	b.ok("presence:heartbeat", nil)
	b.ok("presence:heartbeat", map[string]any{"epoch": epochB})

	// A patch changes the state: update event to both.
	hb = b.ok("presence:heartbeat", map[string]any{"epoch": epochB, "patchState": map[string]any{"typing": true}})
	if hb["changed"] != true {
		t.Fatalf("patch heartbeat ack %v, want changed", hb)
	}
	up := a.waitEvent("presence:event", presenceEvent("update", b.id()))
	jsonEq(t, up["state"], map[string]any{"typing": true})
	b.waitEvent("presence:event", presenceEvent("update", b.id()))
	// The same patch again changes nothing.
	if hb := b.ok("presence:heartbeat", map[string]any{"patchState": map[string]any{"typing": true}}); hb["changed"] != false {
		t.Fatalf("repeated patch ack %v, want changed false", hb)
	}

	// A higher epoch is adopted; a lower one is now stale.
	hb = b.ok("presence:heartbeat", map[string]any{"epoch": epochB + 10})
	if num(hb["epoch"]) != epochB+10 {
		t.Fatalf("heartbeat with a higher epoch: %v", hb)
	}
	b.fail("PRESENCE_STALE_EPOCH", "presence:heartbeat", map[string]any{"epoch": epochB})

	// Rejoining the same room is allowed and gives a higher epoch.
	rj := b.ok("presence:join", map[string]any{"roomId": room, "userId": "bob"})
	if num(rj["self"].(map[string]any)["epoch"]) <= epochB+10 {
		t.Fatalf("rejoin epoch %v, want > %d", rj["self"], epochB+10)
	}

	b.ok("presence:leave")
	a.waitEvent("presence:event", presenceEvent("leave", b.id()))
	b.ok("presence:leave") // idempotent
	// After leaving, heartbeats fail and another room may be joined.
	b.fail("PRESENCE_NOT_JOINED", "presence:heartbeat")
	b.ok("presence:join", map[string]any{"roomId": room + "-other", "userId": "bob"})
	b.ok("presence:leave")
	a.ok("presence:leave")
}

func testJoinErrors(t *testing.T, n *node) {
	room := "room-" + redistest.Prefix(t)
	c := dial(t, n.url)
	c.fail("PRESENCE_INVALID", "presence:join")                                                  // no payload
	c.fail("PRESENCE_INVALID", "presence:join", "room")                                          // not an object
	c.fail("PRESENCE_INVALID", "presence:join", map[string]any{"userId": "u"})                   // no roomId
	c.fail("PRESENCE_INVALID", "presence:join", map[string]any{"roomId": "", "userId": "u"})     // empty roomId
	c.fail("PRESENCE_INVALID", "presence:join", map[string]any{"roomId": room})                  // no userId
	c.fail("PRESENCE_INVALID", "presence:join", map[string]any{"roomId": room, "userId": 7})     // userId not a string
	c.fail("PRESENCE_INVALID", "presence:join", map[string]any{"roomId": "a{b}", "userId": "u"}) // hash-tag characters
	c.fail("PRESENCE_INVALID", "presence:join", map[string]any{"roomId": room, "userId": "u", "state": "x"})
	c.fail("PRESENCE_INVALID", "presence:join", map[string]any{"roomId": room, "userId": "u", "state": []any{1}})
	c.ok("presence:join", map[string]any{"roomId": room, "userId": "u", "state": nil})
	a := c.fail("PRESENCE_CONFLICT", "presence:join", map[string]any{"roomId": room + "-2", "userId": "u"})
	if a["error"] != "Socket already joined a different presence room" {
		t.Fatalf("join of a second room: %v", a)
	}
	c.ok("presence:leave")
}

func testHeartbeatErrors(t *testing.T, n *node) {
	room := "room-" + redistest.Prefix(t)
	c := dial(t, n.url)
	c.fail("PRESENCE_NOT_JOINED", "presence:heartbeat") // not joined
	c.ok("presence:join", map[string]any{"roomId": room, "userId": "u"})
	c.fail("PRESENCE_INVALID", "presence:heartbeat", map[string]any{"epoch": -1})
	c.fail("PRESENCE_INVALID", "presence:heartbeat", map[string]any{"epoch": 1.5})
	c.fail("PRESENCE_INVALID", "presence:heartbeat", map[string]any{"epoch": "1"})
	c.fail("PRESENCE_INVALID", "presence:heartbeat", map[string]any{"patchState": "x"})
	c.fail("PRESENCE_INVALID", "presence:heartbeat", 5)
	c.fail("PRESENCE_STALE_EPOCH", "presence:heartbeat", map[string]any{"epoch": 0}) // stale
	c.ok("presence:leave")
}

func testDisconnectLeaves(t *testing.T, n *node) {
	room := "room-" + redistest.Prefix(t)
	a := dial(t, n.url)
	b := dial(t, n.url)
	a.ok("presence:join", map[string]any{"roomId": room, "userId": "alice"})
	b.ok("presence:join", map[string]any{"roomId": room, "userId": "bob"})
	id := b.id()
	b.close()
	a.waitEvent("presence:event", presenceEvent("leave", id))
	a.ok("presence:leave")
}
