package presence_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// Issue 14: the room's sequence counter. Join, changing heartbeat, leave
// and reap each take the next number, and their events carry it; a
// heartbeat that changes nothing takes none; the counter has no TTL while
// the room has conns, expires the lookback after it empties (by leave or
// by reaping), and a counter that is gone restarts above every number the
// room handed out.
func TestRoomSeq(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		const lookback = 200 * time.Millisecond
		s := newService(t, tg.connect(t), presence.Config{TTL: 100 * time.Millisecond, ReaperLookback: lookback})
		ctx := ctxT(t)
		const room = "seq"
		evs := make(chan presence.Event, 64)
		sub, err := s.Subscribe(ctx, func(e presence.Event) { evs <- e })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		next := func(typ string, want int64) {
			t.Helper()
			select {
			case e := <-evs:
				if e.Type != typ || e.Seq != want {
					t.Fatalf("event %s seq %d, want %s seq %d", e.Type, e.Seq, typ, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no %s event", typ)
			}
		}
		pttl := func() int64 {
			t.Helper()
			r, err := s.Client().Do(ctx, backend.K("PTTL", s.Keys().Seq(room)))
			if err != nil {
				t.Fatal(err)
			}
			return r[0].Int
		}

		a, err := s.Join(ctx, room, "a", "u", nil)
		if err != nil {
			t.Fatal(err)
		}
		next("join", a.Seq)
		b, err := s.Join(ctx, room, "b", "u", nil)
		if err != nil || b.Seq != a.Seq+1 {
			t.Fatalf("second join: seq %d (err %v), want %d", b.Seq, err, a.Seq+1)
		}
		next("join", b.Seq)
		for _, patch := range []string{`{"k":1}`, `{"k":1}`, `{"k":2}`} {
			if _, err := s.Heartbeat(ctx, room, "a", presence.HeartbeatParams{PatchState: json.RawMessage(patch)}); err != nil {
				t.Fatal(err)
			}
		}
		next("update", b.Seq+1)
		next("update", b.Seq+2) // the unchanged heartbeat took no number
		snap, err := s.SnapshotSeq(ctx, room)
		if err != nil || snap.Seq != b.Seq+2 || len(snap.Snapshot) != 2 {
			t.Fatalf("SnapshotSeq: %+v, %v; want 2 conns at seq %d", snap, err, b.Seq+2)
		}
		if ttl := pttl(); ttl != -1 {
			t.Fatalf("counter PTTL %d while the room has conns, want none (-1)", ttl)
		}
		if err := s.Leave(ctx, room, "b"); err != nil {
			t.Fatal(err)
		}
		next("leave", b.Seq+3)
		if ttl := pttl(); ttl != -1 {
			t.Fatalf("counter PTTL %d with a conn left, want none", ttl)
		}
		// a expires and is reaped: the room empties and the counter's
		// expiry starts.
		time.Sleep(100*time.Millisecond + lookback)
		if _, err := s.Reap(ctx); err != nil {
			t.Fatal(err)
		}
		next("leave", b.Seq+4)
		if ttl := pttl(); ttl <= 0 || ttl > lookback.Milliseconds() {
			t.Fatalf("counter PTTL %d once the room emptied, want (0, %d]", ttl, lookback.Milliseconds())
		}
		// Rejoined within the lookback: the count goes on, and the counter
		// lives again as long as the room.
		c, err := s.Join(ctx, room, "c", "u", nil)
		if err != nil || c.Seq != b.Seq+5 {
			t.Fatalf("join within the lookback: seq %d (err %v), want %d", c.Seq, err, b.Seq+5)
		}
		next("join", c.Seq)
		if ttl := pttl(); ttl != -1 {
			t.Fatalf("counter PTTL %d after a join, want none", ttl)
		}
		if err := s.Leave(ctx, room, "c"); err != nil {
			t.Fatal(err)
		}
		next("leave", c.Seq+1)
		deadline := time.Now().Add(5 * time.Second)
		for pttl() != -2 {
			if time.Now().After(deadline) {
				t.Fatal("the counter of a room empty past the lookback did not expire")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if r, _ := s.SnapshotSeq(ctx, room); r.Seq != 0 {
			t.Fatalf("SnapshotSeq of a room without counter: seq %d, want 0", r.Seq)
		}
		d, err := s.Join(ctx, room, "d", "u", nil)
		if err != nil || d.Seq <= c.Seq+1 {
			t.Fatalf("join after the counter expired: seq %d (err %v), want above %d", d.Seq, err, c.Seq+1)
		}
		next("join", d.Seq)
	})
}
