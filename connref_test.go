package presence_test

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend/rueidis"
)

// snapshotOf returns room's entries by conn id.
func snapshotOf(t *testing.T, s *presence.Service, room string) map[string]presence.Entry {
	t.Helper()
	snap, err := s.Snapshot(ctxT(t), room)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]presence.Entry{}
	for _, e := range snap {
		out[e.ConnID] = e
	}
	return out
}

// hookLog records Hooks.Heartbeat outcomes.
type hookLog struct {
	mu       sync.Mutex
	outcomes []string
}

func (h *hookLog) hook(outcome string, _ time.Duration) {
	h.mu.Lock()
	h.outcomes = append(h.outcomes, outcome)
	h.mu.Unlock()
}

func (h *hookLog) last() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.outcomes) == 0 {
		return ""
	}
	return h.outcomes[len(h.outcomes)-1]
}

// HeartbeatConn heartbeats exactly its ref's room and conn, with
// Heartbeat's fencing, errors, counters and hook, on every strategy.
func TestHeartbeatConn(t *testing.T) {
	forEachStrategy(t, func(t *testing.T, tg target, spec string) {
		clk := newFakeClock()
		hooks := &hookLog{}
		c := tg.connect(t)
		s := newService(t, c, presence.Config{Heartbeat: spec, Now: clk.Now, Hooks: presence.Hooks{Heartbeat: hooks.hook}})
		ctx := ctxT(t)
		// The same conn id in two rooms whose ids share a prefix: a ref of
		// one must never touch the other.
		j1, err := s.Join(ctx, "r:1", "c", "u", json.RawMessage(`{"n":0}`))
		if err != nil {
			t.Fatal(err)
		}
		j2, err := s.Join(ctx, "r:1:2", "c", "u", json.RawMessage(`{"n":0}`))
		if err != nil {
			t.Fatal(err)
		}
		before := snapshotOf(t, s, "r:1")["c"]

		ref, err := s.ConnRef("r:1:2", "c")
		if err != nil || ref.Room() != "r:1:2" || ref.Conn() != "c" {
			t.Fatalf("ConnRef: %v %q %q", err, ref.Room(), ref.Conn())
		}
		clk.Advance(time.Second)
		r, err := s.HeartbeatConn(ctx, ref, presence.HeartbeatParams{Epoch: &j2.Epoch, PatchState: json.RawMessage(`{"n":1}`)})
		if err != nil || !r.Changed || r.Epoch != j2.Epoch {
			t.Fatalf("HeartbeatConn: %+v %v", r, err)
		}
		if e := snapshotOf(t, s, "r:1:2")["c"]; string(e.State) != `{"n":1}` || e.LastSeenMs != clk.Now().UnixMilli() {
			t.Fatalf("ref's conn after HeartbeatConn: %+v", e)
		}
		if e := snapshotOf(t, s, "r:1")["c"]; !entriesEqual(e, before) {
			t.Fatalf("HeartbeatConn of r:1:2 changed r:1's conn: %+v, was %+v", e, before)
		}
		if hooks.last() != presence.OutcomeChanged || s.Stats().HeartbeatsChanged != 1 {
			t.Fatalf("hook %q, stats %+v", hooks.last(), s.Stats())
		}

		// Unchanged, stale, and an unknown conn count as Heartbeat's do.
		if r, err := s.HeartbeatConn(ctx, ref, presence.HeartbeatParams{PatchState: json.RawMessage(`{"n":1}`)}); err != nil || r.Changed {
			t.Fatalf("unchanged HeartbeatConn: %+v %v", r, err)
		}
		stale := j2.Epoch - 1
		if _, err := s.HeartbeatConn(ctx, ref, presence.HeartbeatParams{Epoch: &stale}); !errors.Is(err, presence.ErrStaleEpoch) {
			t.Fatalf("stale HeartbeatConn: %v", err)
		}
		ghost, err := s.ConnRef("r:1", "ghost")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.HeartbeatConn(ctx, ghost, presence.HeartbeatParams{}); !errors.Is(err, presence.ErrConnNotFound) {
			t.Fatalf("HeartbeatConn of an unknown conn: %v", err)
		}
		if _, err := s.HeartbeatConn(ctx, ref, presence.HeartbeatParams{Epoch: presence.Rev(-1)}); !errors.Is(err, presence.ErrInvalidArgument) {
			t.Fatalf("negative epoch: %v", err)
		}

		// The zero ref, and a ref of another Service (same prefix, same
		// Redis), are invalid arguments and touch nothing.
		other := newService(t, c, presence.Config{KeyPrefix: s.Config().KeyPrefix, Now: clk.Now})
		foreign, err := other.ConnRef("r:1", "c")
		if err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		for name, bad := range map[string]presence.ConnRef{"zero": {}, "foreign": foreign} {
			if _, err := s.HeartbeatConn(ctx, bad, presence.HeartbeatParams{Epoch: &j1.Epoch, PatchState: json.RawMessage(`{"n":9}`)}); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Errorf("HeartbeatConn of a %s ref: %v", name, err)
			}
			if hooks.last() != presence.OutcomeError {
				t.Errorf("hook after a %s ref: %q", name, hooks.last())
			}
		}
		if e := snapshotOf(t, s, "r:1")["c"]; !entriesEqual(e, before) {
			t.Fatalf("a refused HeartbeatConn changed r:1's conn: %+v", e)
		}
		st := s.Stats()
		if st.HeartbeatsOK != 1 || st.HeartbeatsChanged != 1 || st.HeartbeatsStale != 1 || st.HeartbeatsNotFound != 1 || st.HeartbeatsError != 3 {
			t.Fatalf("stats %+v", st)
		}

		// A ref outlives a rejoin: only the epoch moves.
		j3, err := s.Join(ctx, "r:1:2", "c", "u", nil)
		if err != nil {
			t.Fatal(err)
		}
		if r, err := s.HeartbeatConn(ctx, ref, presence.HeartbeatParams{Epoch: &j3.Epoch}); err != nil || r.Epoch != j3.Epoch {
			t.Fatalf("HeartbeatConn after rejoin: %+v %v", r, err)
		}

		s.Close()
		if _, err := s.HeartbeatConn(ctx, ref, presence.HeartbeatParams{}); !errors.Is(err, presence.ErrClosed) {
			t.Fatalf("HeartbeatConn after Close: %v", err)
		}
		// Heartbeat on a closed service says closed before bad ids, as
		// before it was built on HeartbeatConn.
		if _, err := s.Heartbeat(ctx, "", "{", presence.HeartbeatParams{}); !errors.Is(err, presence.ErrClosed) {
			t.Fatalf("Heartbeat with bad ids after Close: %v", err)
		}
	})
}

func entriesEqual(a, b presence.Entry) bool {
	return a.ConnID == b.ConnID && a.UserID == b.UserID && string(a.State) == string(b.State) &&
		a.LastSeenMs == b.LastSeenMs && a.Epoch == b.Epoch
}

// ConnRef refuses what Heartbeat refuses, with ErrInvalidArgument, and
// Heartbeat counts a bad id as an error outcome.
func TestConnRefValidatesIDs(t *testing.T) {
	// No Redis needed: validation comes first. Build the Service on a
	// client that is never used.
	c := rueidis.NewFromClient(nil)
	hooks := &hookLog{}
	s, err := presence.New(c, presence.Config{ReaperInterval: -1, MaxIDBytes: 16, Hooks: presence.Hooks{Heartbeat: hooks.hook},
		PubSub: presence.PubSubPattern}) // auto would ask the nil client whether it is a cluster
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, id := range [][2]string{{"", "c"}, {"r", ""}, {"r{", "c"}, {"r", "c}"}, {"r\x00", "c"}, {"r", "c\n"},
		{strings.Repeat("r", 17), "c"}, {"r", string([]byte{0xff})}} {
		if _, err := s.ConnRef(id[0], id[1]); !errors.Is(err, presence.ErrInvalidArgument) {
			t.Errorf("ConnRef(%q, %q): %v, want ErrInvalidArgument", id[0], id[1], err)
		}
		if _, err := s.Heartbeat(ctxT(t), id[0], id[1], presence.HeartbeatParams{}); !errors.Is(err, presence.ErrInvalidArgument) {
			t.Errorf("Heartbeat(%q, %q): %v, want ErrInvalidArgument", id[0], id[1], err)
		}
		if hooks.last() != presence.OutcomeError {
			t.Errorf("Heartbeat(%q, %q): hook %q", id[0], id[1], hooks.last())
		}
	}
	if n := s.Stats().HeartbeatsError; n != 8 {
		t.Errorf("HeartbeatsError = %d, want 8", n)
	}
	if ref, err := s.ConnRef("r:a:b", strings.Repeat("c", 16)); err != nil || ref.Room() != "r:a:b" {
		t.Errorf("ConnRef of valid ids: %v", err)
	}
	var zero presence.ConnRef
	if zero.Room() != "" || zero.Conn() != "" {
		t.Error("zero ConnRef has ids")
	}
}
