package presence_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/counting"
	"github.com/realtime-message/presence/strategy"
)

var heartbeatSpecs = []string{"lua", "pipeline", "batch?window=5ms&max=100"}

func ptr[T any](v T) *T { return &v }

// eventLog collects events from a subscription.
type eventLog struct {
	mu  sync.Mutex
	evs []presence.Event
	ch  chan struct{}
}

// subscribe records the events of s that match types (all when none). On
// a cluster, pub/sub crosses nodes asynchronously, so an event published
// before Subscribe returned may still arrive: tests filter by type.
func subscribe(t *testing.T, s *presence.Service, types ...string) *eventLog {
	t.Helper()
	l := &eventLog{ch: make(chan struct{}, 1000)}
	sub, err := s.Subscribe(ctxT(t), func(e presence.Event) {
		if len(types) > 0 && !slices.Contains(types, e.Type) {
			return
		}
		l.mu.Lock()
		l.evs = append(l.evs, e)
		l.mu.Unlock()
		l.ch <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	return l
}

// waitN waits for n events in total, then a little longer to catch extras,
// and returns them all.
func (l *eventLog) waitN(t *testing.T, n int) []presence.Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		l.mu.Lock()
		got := len(l.evs)
		l.mu.Unlock()
		if got >= n {
			break
		}
		select {
		case <-l.ch:
		case <-deadline:
			t.Fatalf("got %d events, want %d: %+v", got, n, l.snapshot())
		}
	}
	time.Sleep(150 * time.Millisecond) // an extra event would arrive by now
	return l.snapshot()
}

func (l *eventLog) snapshot() []presence.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

func forEachStrategy(t *testing.T, fn func(t *testing.T, tg target, spec string)) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for _, spec := range heartbeatSpecs {
			name, _, _ := strings.Cut(spec, "?")
			t.Run(name, func(t *testing.T) { fn(t, tg, spec) })
		}
	})
}

func connHashExists(t *testing.T, s *presence.Service, room, conn string) bool {
	t.Helper()
	r, err := s.Client().Do(ctxT(t), backend.K("EXISTS", s.Keys().Conn(room, conn)))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := r[0].AsInt()
	return n == 1
}

func smembers(t *testing.T, s *presence.Service, key string) []string {
	t.Helper()
	r, err := s.Client().Do(ctxT(t), backend.K("SMEMBERS", key))
	if err != nil {
		t.Fatal(err)
	}
	m, err := r[0].AsStrings()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func entryOf(t *testing.T, s *presence.Service, room, conn string) presence.Entry {
	t.Helper()
	snap, err := s.Snapshot(ctxT(t), room)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range snap {
		if e.ConnID == conn {
			return e
		}
	}
	t.Fatalf("conn %s not in snapshot %+v", conn, snap)
	return presence.Entry{}
}

func TestJoinSnapshotAndEvent(t *testing.T) {
	forEachStrategy(t, func(t *testing.T, tg target, spec string) {
		s := newService(t, tg.connect(t), presence.Config{Heartbeat: spec})
		ev := subscribe(t, s, "join")
		ctx := ctxT(t)
		a, err := s.Join(ctx, "r1", "c1", "alice", json.RawMessage(`{"b":[1,2],"a":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Join(ctx, "r1", "c2", "bob", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Snapshot) != 1 || len(b.Snapshot) != 2 {
			t.Fatalf("snapshots %+v / %+v", a.Snapshot, b.Snapshot)
		}
		e := b.Snapshot[0]
		if e.ConnID != "c1" || e.UserID != "alice" || string(e.State) != `{"a":"x","b":[1,2]}` || e.Epoch != a.Epoch || e.LastSeenMs == 0 {
			t.Fatalf("entry %+v (epoch %d)", e, a.Epoch)
		}
		if string(b.Snapshot[1].State) != `{}` {
			t.Fatalf("empty state is %s", b.Snapshot[1].State)
		}
		evs := ev.waitN(t, 2)
		if len(evs) != 2 || evs[0].Type != "join" || evs[0].ConnID != "c1" || evs[0].UserID != "alice" ||
			evs[0].RoomID != "r1" || evs[0].Epoch != a.Epoch || string(evs[0].State) != `{"a":"x","b":[1,2]}` || evs[0].TS == 0 {
			t.Fatalf("events %+v", evs)
		}
		if got := smembers(t, s, s.Keys().ActiveRooms()); !slices.Equal(got, []string{"r1"}) {
			t.Fatalf("active rooms %v", got)
		}
		if got := smembers(t, s, s.Keys().Members("r1")); !slices.Equal(got, []string{"alice", "bob"}) {
			t.Fatalf("members %v", got)
		}
	})
}

func TestStaleHeartbeatRejectedWithoutWrite(t *testing.T) {
	forEachStrategy(t, func(t *testing.T, tg target, spec string) {
		clk := newFakeClock()
		s := newService(t, tg.connect(t), presence.Config{Heartbeat: spec, Now: clk.Now})
		ctx := ctxT(t)
		j, err := s.Join(ctx, "r", "c", "u", json.RawMessage(`{"k":1}`))
		if err != nil {
			t.Fatal(err)
		}
		ev := subscribe(t, s, "update")
		before := entryOf(t, s, "r", "c")
		clk.Advance(time.Second)
		_, err = s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{Epoch: ptr(j.Epoch - 1), PatchState: json.RawMessage(`{"k":2}`)})
		if !errors.Is(err, presence.ErrStaleEpoch) {
			t.Fatalf("stale heartbeat: %v", err)
		}
		after := entryOf(t, s, "r", "c")
		if string(after.State) != string(before.State) || after.LastSeenMs != before.LastSeenMs || after.Epoch != before.Epoch {
			t.Fatalf("stale heartbeat wrote: before %+v after %+v", before, after)
		}
		// An unfenced heartbeat still works, proving the write path is live.
		if _, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{PatchState: json.RawMessage(`{"k":3}`)}); err != nil {
			t.Fatal(err)
		}
		evs := ev.waitN(t, 1)
		if len(evs) != 1 || string(evs[0].State) != `{"k":3}` {
			t.Fatalf("events %+v", evs)
		}
		if st := s.Stats(); st.HeartbeatsStale != 1 || st.HeartbeatsChanged != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestHigherEpochAdopted(t *testing.T) {
	forEachStrategy(t, func(t *testing.T, tg target, spec string) {
		s := newService(t, tg.connect(t), presence.Config{Heartbeat: spec})
		ctx := ctxT(t)
		j, _ := s.Join(ctx, "r", "c", "u", nil)
		same, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{Epoch: ptr(j.Epoch)})
		if err != nil || same.Epoch != j.Epoch || same.Changed {
			t.Fatalf("equal epoch: %+v %v", same, err)
		}
		hi := j.Epoch + 5
		r, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{Epoch: &hi})
		if err != nil || r.Epoch != hi {
			t.Fatalf("higher epoch: %+v %v", r, err)
		}
		if e := entryOf(t, s, "r", "c"); e.Epoch != hi {
			t.Fatalf("stored epoch %d, want %d", e.Epoch, hi)
		}
		if _, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{Epoch: ptr(j.Epoch)}); !errors.Is(err, presence.ErrStaleEpoch) {
			t.Fatalf("old epoch after adoption: %v", err)
		}
		// An absent epoch reports the stored one.
		r, err = s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{})
		if err != nil || r.Epoch != hi {
			t.Fatalf("no epoch: %+v %v", r, err)
		}
	})
}

func TestRejoinEpochStrictlyGreater(t *testing.T) {
	forEachStrategy(t, func(t *testing.T, tg target, spec string) {
		clk := newFakeClock()
		s := newService(t, tg.connect(t), presence.Config{Heartbeat: spec, Now: clk.Now})
		ctx := ctxT(t)
		j1, _ := s.Join(ctx, "r", "c", "u", nil)
		// A rejoin within the same millisecond still grows.
		j2, err := s.Join(ctx, "r", "c", "u", nil)
		if err != nil || j2.Epoch <= j1.Epoch {
			t.Fatalf("rejoin epoch %d after %d (%v)", j2.Epoch, j1.Epoch, err)
		}
		// A client-chosen epoch far ahead of the clock is remembered...
		far := j2.Epoch + 1_000_000
		if _, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{Epoch: &far}); err != nil {
			t.Fatal(err)
		}
		j3, _ := s.Join(ctx, "r", "c", "u", nil)
		if j3.Epoch <= far {
			t.Fatalf("rejoin epoch %d not above %d", j3.Epoch, far)
		}
		// ...even across a leave.
		if err := s.Leave(ctx, "r", "c"); err != nil {
			t.Fatal(err)
		}
		j4, _ := s.Join(ctx, "r", "c", "u", nil)
		if j4.Epoch <= j3.Epoch {
			t.Fatalf("join after leave: epoch %d not above %d", j4.Epoch, j3.Epoch)
		}
		// And once the clock passes it, the clock wins.
		clk.Advance(time.Hour)
		j5, _ := s.Join(ctx, "r", "c", "u", nil)
		if j5.Epoch != clk.Now().UnixMilli() {
			t.Fatalf("epoch %d, want now %d", j5.Epoch, clk.Now().UnixMilli())
		}
	})
}

func TestPatchMergeAndChanged(t *testing.T) {
	forEachStrategy(t, func(t *testing.T, tg target, spec string) {
		s := newService(t, tg.connect(t), presence.Config{Heartbeat: spec})
		ctx := ctxT(t)
		if _, err := s.Join(ctx, "r", "c", "u", json.RawMessage(`{"a":1,"b":{"x":1,"y":[1,{}]},"n":12345678901234567890}`)); err != nil {
			t.Fatal(err)
		}
		ev := subscribe(t, s, "update")
		steps := []struct {
			patch   string
			changed bool
		}{
			{`{"b":{"y":[1,{}],"x":1}}`, false}, // same value, other key order
			{`{}`, false},
			{`{"n":12345678901234567890}`, false}, // no rounding anywhere
			{`{"a":2}`, true},
			{`{"a":2}`, false},
			{`{"c":[]}`, true}, // a new key; [] stays [] (not {})
			{`{"a":2,"b":null}`, true},
		}
		var want []string
		for i, st := range steps {
			r, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{PatchState: json.RawMessage(st.patch)})
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if r.Changed != st.changed {
				t.Fatalf("step %d %s: changed=%v, want %v", i, st.patch, r.Changed, st.changed)
			}
			if st.changed {
				want = append(want, string(entryOf(t, s, "r", "c").State))
			}
		}
		const final = `{"a":2,"b":null,"c":[],"n":12345678901234567890}`
		if got := string(entryOf(t, s, "r", "c").State); got != final {
			t.Fatalf("state %s, want %s", got, final)
		}
		evs := ev.waitN(t, len(want))
		if len(evs) != len(want) {
			t.Fatalf("%d update events, want %d: %+v", len(evs), len(want), evs)
		}
		for i, e := range evs {
			if e.Type != "update" || string(e.State) != want[i] || e.UserID != "u" || e.ConnID != "c" {
				t.Fatalf("event %d: %+v, want state %s", i, e, want[i])
			}
		}
	})
}

func TestLeaveIdempotentKeepsMemberWithOtherConn(t *testing.T) {
	forEachStrategy(t, func(t *testing.T, tg target, spec string) {
		s := newService(t, tg.connect(t), presence.Config{Heartbeat: spec})
		ctx := ctxT(t)
		s.Join(ctx, "r", "c1", "u", json.RawMessage(`{"s":1}`))
		s.Join(ctx, "r", "c2", "u", nil)
		ev := subscribe(t, s, "leave")
		if err := s.Leave(ctx, "r", "c1"); err != nil {
			t.Fatal(err)
		}
		if got := smembers(t, s, s.Keys().Members("r")); !slices.Equal(got, []string{"u"}) {
			t.Fatalf("members after first leave %v", got)
		}
		if err := s.Leave(ctx, "r", "c1"); err != nil {
			t.Fatalf("second leave: %v", err)
		}
		if _, err := s.Heartbeat(ctx, "r", "c1", presence.HeartbeatParams{}); !errors.Is(err, presence.ErrConnNotFound) {
			t.Fatalf("heartbeat after leave: %v", err)
		}
		if err := s.Leave(ctx, "r", "c2"); err != nil {
			t.Fatal(err)
		}
		if got := smembers(t, s, s.Keys().Members("r")); len(got) != 0 {
			t.Fatalf("members after last leave %v", got)
		}
		if got := smembers(t, s, s.Keys().Conns("r")); len(got) != 0 {
			t.Fatalf("conns after last leave %v", got)
		}
		if got := smembers(t, s, s.Keys().ActiveRooms()); len(got) != 0 {
			t.Fatalf("active rooms after last leave %v", got)
		}
		evs := ev.waitN(t, 2)
		if len(evs) != 2 || evs[0].Type != "leave" || evs[0].ConnID != "c1" || string(evs[0].State) != `{"s":1}` || evs[1].ConnID != "c2" {
			t.Fatalf("leave events %+v", evs)
		}
	})
}

func TestHeartbeatUnknownConn(t *testing.T) {
	forEachStrategy(t, func(t *testing.T, tg target, spec string) {
		s := newService(t, tg.connect(t), presence.Config{Heartbeat: spec})
		_, err := s.Heartbeat(ctxT(t), "r", "nobody", presence.HeartbeatParams{PatchState: json.RawMessage(`{"a":1}`)})
		if !errors.Is(err, presence.ErrConnNotFound) {
			t.Fatalf("got %v", err)
		}
		if connHashExists(t, s, "r", "nobody") {
			t.Fatal("heartbeat of an unknown conn created it")
		}
		if s.Stats().HeartbeatsNotFound != 1 {
			t.Fatalf("stats %+v", s.Stats())
		}
	})
}

func TestConnExpiresWithTTL(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), presence.Config{TTL: 300 * time.Millisecond, ReaperLookback: time.Second})
		ctx := ctxT(t)
		s.Join(ctx, "r", "c", "u", nil)
		deadline := time.Now().Add(10 * time.Second)
		for connHashExists(t, s, "r", "c") {
			if time.Now().After(deadline) {
				t.Fatal("conn hash never expired")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{}); !errors.Is(err, presence.ErrConnNotFound) {
			t.Fatalf("heartbeat after expiry: %v", err)
		}
		if snap, _ := s.Snapshot(ctx, "r"); len(snap) != 0 {
			t.Fatalf("expired conn in snapshot: %+v", snap)
		}
	})
}

// Two reapers racing on one room remove the expired conn once, publish one
// leave, and leave the live conn alone.
func TestReapersRaceRemoveOnce(t *testing.T) {
	forEachStrategy(t, func(t *testing.T, tg target, spec string) {
		clk := newFakeClock()
		cfg := presence.Config{Heartbeat: spec, Now: clk.Now, TTL: 10 * time.Second, KeyPrefix: "reap" + strings.ReplaceAll(t.Name(), "/", "_")}
		a := newService(t, tg.connect(t), cfg)
		b := newService(t, tg.connect(t), cfg)
		ctx := ctxT(t)
		for i := range 4 {
			a.Join(ctx, fmt.Sprint("room", i), "dead", "u1", nil)
			a.Join(ctx, fmt.Sprint("room", i), "live", "u2", nil)
		}
		ev := subscribe(t, a, "leave")
		clk.Advance(25 * time.Second) // past the 20 s lookback
		for i := range 4 {
			room := fmt.Sprint("room", i)
			// "dead" expired (as TTL would do); "live" heartbeats now.
			a.Client().Do(ctx, backend.K("DEL", a.Keys().Conn(room, "dead")))
			if _, err := a.Heartbeat(ctx, room, "live", presence.HeartbeatParams{}); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		var na, nb int
		var ea, eb error
		wg.Add(2)
		go func() { defer wg.Done(); na, ea = a.Reap(ctx) }()
		go func() { defer wg.Done(); nb, eb = b.Reap(ctx) }()
		wg.Wait()
		if ea != nil || eb != nil {
			t.Fatal(ea, eb)
		}
		if na+nb != 4 {
			t.Fatalf("reapers removed %d+%d, want 4 in total", na, nb)
		}
		evs := ev.waitN(t, 4)
		if len(evs) != 4 {
			t.Fatalf("%d leave events, want 4: %+v", len(evs), evs)
		}
		for _, e := range evs {
			if e.Type != "leave" || e.ConnID != "dead" || e.UserID != "u1" || e.Epoch == 0 {
				t.Fatalf("event %+v", e)
			}
		}
		for i := range 4 {
			room := fmt.Sprint("room", i)
			snap, _ := a.Snapshot(ctx, room)
			if len(snap) != 1 || snap[0].ConnID != "live" {
				t.Fatalf("%s snapshot %+v", room, snap)
			}
			if got := smembers(t, a, a.Keys().Members(room)); !slices.Equal(got, []string{"u2"}) {
				t.Fatalf("%s members %v", room, got)
			}
		}
		if a.Stats().Reaped+b.Stats().Reaped != 4 {
			t.Fatal("reaped counters disagree")
		}
		// The live conns expire too: the rooms leave active_rooms.
		clk.Advance(25 * time.Second)
		for i := range 4 {
			a.Client().Do(ctx, backend.K("DEL", a.Keys().Conn(fmt.Sprint("room", i), "live")))
		}
		if n, err := b.Reap(ctx); err != nil || n != 4 {
			t.Fatalf("second pass removed %d (%v)", n, err)
		}
		if got := smembers(t, a, a.Keys().ActiveRooms()); len(got) != 0 {
			t.Fatalf("active rooms %v", got)
		}
	})
}

// A conn whose hash still exists (it heartbeated) is never reaped, even
// when its last_seen entry is old.
func TestReaperKeepsConnWithLiveHash(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		clk := newFakeClock()
		s := newService(t, tg.connect(t), presence.Config{Now: clk.Now, TTL: time.Hour})
		ctx := ctxT(t)
		s.Join(ctx, "r", "c", "u", nil)
		clk.Advance(3 * time.Hour)
		if n, err := s.Reap(ctx); err != nil || n != 0 {
			t.Fatalf("reaped %d (%v)", n, err)
		}
		if _, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestBadInputWritesNothing(t *testing.T) {
	forEachStrategy(t, func(t *testing.T, tg target, spec string) {
		s := newService(t, tg.connect(t), presence.Config{Heartbeat: spec, MaxStateBytes: 1024})
		ctx := ctxT(t)
		ev := subscribe(t, s)
		s.Join(ctx, "r", "c", "u", json.RawMessage(`{"a":1}`))
		ev.waitN(t, 1)
		big := `{"x":"` + strings.Repeat("y", 2000) + `"}`
		for _, room := range []string{"", "a{b", "a}b", "a\nb", "a\x00b", strings.Repeat("r", 257), "\xff"} {
			if _, err := s.Join(ctx, room, "c", "u", nil); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Errorf("join room %q: %v", room, err)
			}
			if _, err := s.Heartbeat(ctx, room, "c", presence.HeartbeatParams{}); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Errorf("heartbeat room %q: %v", room, err)
			}
			if err := s.Leave(ctx, room, "c"); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Errorf("leave room %q: %v", room, err)
			}
		}
		for _, bad := range []string{"", "{x}", "}"} {
			if _, err := s.Join(ctx, "r", bad, "u", nil); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Errorf("conn %q: %v", bad, err)
			}
			if _, err := s.Join(ctx, "r", "c2", bad, nil); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Errorf("user %q: %v", bad, err)
			}
		}
		for _, st := range []string{`[1]`, `1`, `"x"`, `{`, `{"a":1} {"b":2}`, big} {
			if _, err := s.Join(ctx, "r", "c2", "u", json.RawMessage(st)); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Errorf("join state %.20q: %v", st, err)
			}
			if _, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{PatchState: json.RawMessage(st)}); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Errorf("patch %.20q: %v", st, err)
			}
		}
		for _, e := range []int64{-1, presence.MaxEpoch + 1} {
			if _, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{Epoch: &e, PatchState: json.RawMessage(`{"a":2}`)}); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Errorf("epoch %d: %v", e, err)
			}
		}
		if connHashExists(t, s, "r", "c2") {
			t.Fatal("a rejected join wrote its conn")
		}
		if got := string(entryOf(t, s, "r", "c").State); got != `{"a":1}` {
			t.Fatalf("state changed by rejected calls: %s", got)
		}
		if evs := ev.waitN(t, 1); len(evs) != 1 {
			t.Fatalf("rejected calls published %+v", evs)
		}
	})
}

// The lua strategy costs exactly one round trip per heartbeat; the others
// are reported as measured.
func TestRoundTripsPerHeartbeat(t *testing.T) {
	forEachStrategy(t, func(t *testing.T, tg target, spec string) {
		c := counting.New(tg.connect(t))
		s := newService(t, c, presence.Config{Heartbeat: spec})
		ctx := ctxT(t)
		s.Join(ctx, "r", "c", "u", nil)
		const n = 20
		c.Reset()
		for i := range n {
			if _, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{PatchState: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}); err != nil {
				t.Fatal(err)
			}
		}
		per := float64(c.RoundTrips()) / n
		t.Logf("%s on %s: %.2f round trips per heartbeat", spec, tg.name, per)
		switch {
		case strings.HasPrefix(spec, "lua"), strings.HasPrefix(spec, "batch"):
			if c.RoundTrips() != n {
				t.Fatalf("%d round trips for %d sequential heartbeats, want %d", c.RoundTrips(), n, n)
			}
		case spec == "pipeline":
			if c.RoundTrips() != 3*n {
				t.Fatalf("%d round trips for %d heartbeats, want 3 each (WATCH, read, EXEC)", c.RoundTrips(), n)
			}
		}
	})
}

func TestRegistryErrorsListAccepted(t *testing.T) {
	for spec, want := range map[string]string{
		"nope":              "batch, lua, pipeline",
		"batch?windw=5ms":   "accepted: max, timeout, window",
		"batch?window=-5ms": "positive duration",
		"lua?x=1":           "accepted: none",
		"batch?max=0":       "[1, 100000]",
	} {
		_, err := strategy.NewHeartbeat(spec, strategy.Env{})
		if !errors.Is(err, presence.ErrInvalidArgument) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want mention of %q", spec, err, want)
		}
	}
	if got := strategy.Heartbeats.Names(); !slices.Equal(got, []string{"batch", "lua", "pipeline"}) {
		t.Errorf("names %v", got)
	}
}

func TestOptimizationsMapping(t *testing.T) {
	for _, c := range []struct {
		o      presence.Optimizations
		hb, md string
	}{
		{presence.Optimizations{}, "pipeline", "lua"},
		{presence.Optimizations{EnableHeartbeatBatching: true}, "batch?window=50ms&max=100", "lua"},
		{presence.Optimizations{EnableHeartbeatBatching: true, HeartbeatBatchWindowMs: 100, HeartbeatMaxBatchSize: 200}, "batch?window=100ms&max=200", "lua"},
		{presence.Optimizations{EnableHeartbeatBatching: true, EnableLuaHeartbeat: true}, "lua", "lua"},
		{presence.Optimizations{EnableTransactionalMetadata: true}, "pipeline", "watch?retries=5"},
		{presence.Optimizations{EnableTransactionalMetadata: true, MetadataMaxRetries: 3}, "pipeline", "watch?retries=3"},
	} {
		hb, md := c.o.Specs()
		if hb != c.hb || md != c.md {
			t.Errorf("%+v → %q %q, want %q %q", c.o, hb, md, c.hb, c.md)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv("REDIS_URL", "127.0.0.1:7000, 127.0.0.1:7001")
	t.Setenv("PRESENCE_BACKEND", "goredis")
	t.Setenv("PRESENCE_HEARTBEAT", "batch?window=20ms")
	t.Setenv("PRESENCE_METADATA", "watch")
	t.Setenv("PRESENCE_TTL_MS", "5000")
	t.Setenv("PRESENCE_REAPER_INTERVAL_MS", "1000")
	t.Setenv("PRESENCE_REAPER_LOOKBACK_MS", "9000")
	c, err := presence.ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Addrs, []string{"127.0.0.1:7000", "127.0.0.1:7001"}) || c.Backend != "goredis" || c.Heartbeat != "batch?window=20ms" ||
		c.Metadata != "watch" || c.TTL != 5*time.Second || c.ReaperInterval != time.Second || c.ReaperLookback != 9*time.Second {
		t.Fatalf("%+v", c)
	}
	t.Setenv("PRESENCE_TTL_MS", "soon")
	if _, err := presence.ConfigFromEnv(); !errors.Is(err, presence.ErrInvalidArgument) {
		t.Fatalf("bad TTL: %v", err)
	}
	t.Setenv("PRESENCE_TTL_MS", "")
	t.Setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
	if c, _ := presence.ConfigFromEnv(); c.RedisURL != "redis://127.0.0.1:6379/0" {
		t.Fatalf("%+v", c)
	}
	// The server's rules: durations with a unit, one URL or host:port seeds.
	t.Setenv("PRESENCE_TTL_MS", "1.5s")
	if c, err := presence.ConfigFromEnv(); err != nil || c.TTL != 1500*time.Millisecond {
		t.Fatalf("TTL with a unit: %v, %v", c.TTL, err)
	}
	for _, bad := range []string{"redis://a:1,redis://b:2", "127.0.0.1", "127.0.0.1:7000,localhost"} {
		t.Setenv("REDIS_URL", bad)
		if _, err := presence.ConfigFromEnv(); !errors.Is(err, presence.ErrInvalidArgument) {
			t.Errorf("REDIS_URL=%q: %v", bad, err)
		}
	}
	t.Setenv("REDIS_URL", "")
	for v, off := range map[string]bool{"": false, "1": false, "0": true, "false": true} {
		t.Setenv("PRESENCE_USER_INDEX", v)
		if c, err := presence.ConfigFromEnv(); err != nil || c.DisableUserIndex != off {
			t.Errorf("PRESENCE_USER_INDEX=%q: DisableUserIndex %v, %v; want %v", v, c.DisableUserIndex, err, off)
		}
	}
	t.Setenv("PRESENCE_USER_INDEX", "off-ish")
	if _, err := presence.ConfigFromEnv(); !errors.Is(err, presence.ErrInvalidArgument) {
		t.Errorf("PRESENCE_USER_INDEX=off-ish: %v", err)
	}
}

func TestClosedServiceReturnsErrClosed(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), presence.Config{})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal("second Close:", err)
		}
		ctx := ctxT(t)
		if _, err := s.Join(ctx, "r", "c", "u", nil); !errors.Is(err, presence.ErrClosed) {
			t.Fatal(err)
		}
		if _, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{}); !errors.Is(err, presence.ErrClosed) {
			t.Fatal(err)
		}
		if _, err := s.Subscribe(ctx, func(presence.Event) {}); !errors.Is(err, presence.ErrClosed) {
			t.Fatal(err)
		}
	})
}

// lossyClient loses the Do calls that match drop, as a network failure
// after the request was (or was not) applied would.
type lossyClient struct {
	backend.Client
	drop func(cmds []backend.Cmd) bool
}

func (c lossyClient) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	if c.drop(cmds) {
		return nil, errors.New("connection reset by peer")
	}
	return c.Client.Do(ctx, cmds...)
}

// A join whose second SADD to active_rooms is lost still leaves its room
// in the reaper's work list, so the conn is reaped after it expires.
func TestJoinWithLostActiveRoomsWriteIsStillReaped(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		clk := newFakeClock()
		prefix := "lossy" + strings.ReplaceAll(t.Name(), "/", "_")
		c := tg.connect(t)
		lossy := lossyClient{Client: c, drop: func(cmds []backend.Cmd) bool {
			// The second round trip: the SADD alone, or with the user
			// index's writes after it.
			second := len(cmds) == 1 || cmds[1].Name == "SADD" && strings.HasSuffix(cmds[1].Keys[0], ":active_users")
			return second && cmds[0].Name == "SADD" && strings.HasSuffix(cmds[0].Keys[0], ":active_rooms")
		}}
		s := newService(t, lossy, presence.Config{Now: clk.Now, KeyPrefix: prefix})
		ctx := ctxT(t)
		if _, err := s.Join(ctx, "r", "c", "alice", nil); err == nil {
			t.Fatal("join reported success although its last write was lost")
		}
		clean := newService(t, c, presence.Config{Now: clk.Now, KeyPrefix: prefix})
		clean.Client().Do(ctx, backend.K("DEL", clean.Keys().Conn("r", "c")))
		clk.Advance(time.Hour)
		if n, err := clean.Reap(ctx); err != nil || n != 1 {
			t.Fatalf("reaped %d (%v), want the expired conn", n, err)
		}
		if got := smembers(t, clean, clean.Keys().Members("r")); len(got) != 0 {
			t.Fatalf("members %v", got)
		}
	})
}

// Every epoch Join returns is one Heartbeat accepts, up to the last one.
// The clock stands just below it: a client's epoch may not lead the clock
// by more than EpochLead.
func TestEpochCeiling(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		clk := &fakeClock{now: time.UnixMilli(presence.MaxEpoch - 2)}
		s := newService(t, tg.connect(t), presence.Config{Now: clk.Now})
		ctx := ctxT(t)
		s.Join(ctx, "r", "c", "u", nil)
		top := presence.MaxEpoch - 1
		if r, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{Epoch: &top}); err != nil || r.Epoch != top {
			t.Fatalf("%+v %v", r, err)
		}
		j, err := s.Join(ctx, "r", "c", "u", nil)
		if err != nil || j.Epoch != presence.MaxEpoch {
			t.Fatalf("rejoin: %+v %v", j, err)
		}
		if r, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{Epoch: &j.Epoch}); err != nil || r.Epoch != presence.MaxEpoch {
			t.Fatalf("heartbeat with the joined epoch: %+v %v", r, err)
		}
		if _, err := s.Join(ctx, "r", "c", "u", nil); !errors.Is(err, presence.ErrInvalidArgument) {
			t.Fatalf("join past the last epoch: %v", err)
		}
		if e := entryOf(t, s, "r", "c"); e.Epoch != presence.MaxEpoch {
			t.Fatalf("refused join changed the epoch: %+v", e)
		}
	})
}

// A handler that panics is logged and keeps receiving later events.
func TestSubscribeHandlerPanicContained(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), presence.Config{})
		got := make(chan string, 10)
		sub, err := s.Subscribe(ctxT(t), func(e presence.Event) {
			got <- e.ConnID
			if e.ConnID == "boom" {
				panic("handler bug")
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		ctx := ctxT(t)
		s.Join(ctx, "r", "boom", "u", nil)
		s.Join(ctx, "r", "after", "u", nil)
		for _, want := range []string{"boom", "after"} {
			select {
			case c := <-got:
				if c != want {
					t.Fatalf("got %s, want %s", c, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no event %s after a panicking handler", want)
			}
		}
	})
}
