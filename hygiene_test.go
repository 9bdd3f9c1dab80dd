package presence_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/rueidis"
	"github.com/realtime-message/presence/internal/redistest"
)

// connectTo opens a rueidis client on srv, closed when the test ends.
func connectTo(t testing.TB, srv *redistest.Server) backend.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rueidis.New(ctx, rueidis.Options{Addrs: srv.Addrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Issue 11 (9): with no lookback configured, a conn whose hash expired is
// reaped once it has been silent for TTL, so a dead node's sockets leave
// within TTL + interval rather than 2 × TTL + interval.
func TestReaperLookbackDefaultsToTTL(t *testing.T) {
	clk := newFakeClock()
	s := newService(t, connectTo(t, redistest.Standalone(t)), presence.Config{TTL: 10 * time.Second, Now: clk.Now})
	if got := s.Config().ReaperLookback; got != 10*time.Second {
		t.Fatalf("default ReaperLookback = %v, want the TTL 10s", got)
	}
	ctx := ctxT(t)
	if _, err := s.Join(ctx, "r", "dead", "u", nil); err != nil {
		t.Fatal(err)
	}
	// The node died: no more heartbeats, and the hash expires with its TTL.
	s.Client().Do(ctx, backend.K("DEL", s.Keys().Conn("r", "dead")))
	clk.Advance(10*time.Second + time.Millisecond)
	n, err := s.Reap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("Reap at TTL + 1ms after the last heartbeat removed %d conns, want 1", n)
	}
}

// countKeys counts the keys under prefix on every master of srv. SCAN
// leaves out keys whose TTL has run out, even before Redis evicts them.
func countKeys(t testing.TB, srv *redistest.Server, prefix string) int {
	t.Helper()
	n := 0
	for i := range srv.Addrs {
		cursor := "0"
		for range 100_000 {
			r := srv.DoNode(t, i, "SCAN", cursor, "MATCH", prefix+":*", "COUNT", "1000")
			if len(r.Elems) != 2 {
				t.Fatalf("SCAN on node %d: %v", i, r)
			}
			cursor = r.Elems[0].Str
			n += len(r.Elems[1].Elems)
			if cursor == "0" {
				break
			}
		}
	}
	return n
}

// Issue 11 (4): thousands of join, heartbeat, rejoin, leave, expiry and
// reap cycles over many rooms, with locks beside them, leave no key behind
// once every room has been empty past the lookback.
func TestNoLeakedKeys(t *testing.T) {
	for _, kind := range []redistest.Kind{redistest.KindStandalone, redistest.KindCluster} {
		t.Run(kind.String(), func(t *testing.T) { testNoLeakedKeys(t, redistest.Get(t, kind)) })
	}
}

func testNoLeakedKeys(t *testing.T, srv *redistest.Server) {
	const (
		ttl      = 150 * time.Millisecond
		rooms    = 50
		rounds   = 20
		workers  = 8
		lockTTL  = 100 * time.Millisecond
		settleBy = 8 * time.Second // the last lock's fence key outlives it by 2 s
	)
	cfg := presence.Config{TTL: ttl, ReaperLookback: ttl, ReaperInterval: 50 * time.Millisecond}
	s := newService(t, connectTo(t, srv), cfg)
	prefix := s.Config().KeyPrefix
	base := countKeys(t, srv, prefix)
	ctx := ctxT(t)

	var ops, peak atomic.Int64
	errs := make(chan error, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- churn(ctx, s, w, workers, rooms, rounds, lockTTL, &ops)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	churned := time.Since(start)
	peak.Store(int64(countKeys(t, srv, prefix)))
	if peak.Load() <= int64(base) {
		t.Fatalf("%d keys right after the churn, no more than the %d before: the test wrote nothing", peak.Load(), base)
	}

	// The conns left to die expire after the TTL, the reaper removes them
	// after the lookback, and what the rooms remember expires after that;
	// a lock's fencing token expires 2 s after the lock.
	quiet := time.Now()
	deadline := quiet.Add(settleBy)
	n := peak.Load()
	for n > int64(base) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		n = int64(countKeys(t, srv, prefix))
	}
	if n != int64(base) {
		var left []string
		for i := range srv.Addrs {
			for _, k := range srv.DoNode(t, i, "SCAN", "0", "MATCH", prefix+":*", "COUNT", "1000").Elems[1].Elems {
				left = append(left, k.Str)
			}
		}
		t.Fatalf("%v after the last operation there are still %d keys under %s (baseline %d), e.g. %q",
			settleBy, n, prefix, base, left[:min(len(left), 5)])
	}
	t.Logf("%d operations over %d rooms (%d cycles) in %v; %d keys right after, back to %d within %v (TTL = lookback = %v)",
		ops.Load(), rooms, rooms*rounds, churned.Round(time.Millisecond), peak.Load(), base,
		time.Since(quiet).Round(10*time.Millisecond), ttl)
}

// churn runs rounds of one presence cycle in each of worker w's rooms: four
// joins (two conns of one user), heartbeats with the epoch returned, a
// higher one, none, a patch; a rejoin as another user; then in even rooms
// four leaves, in odd rooms two leaves and two conns left to expire and be
// reaped; a lock taken, one in two released.
func churn(ctx context.Context, s *presence.Service, w, workers, rooms, rounds int, lockTTL time.Duration, ops *atomic.Int64) error {
	for r := range rounds {
		for room := w; room < rooms; room += workers {
			rid := fmt.Sprint("room", room)
			conns := []string{"a", "b", fmt.Sprint("dead", r), fmt.Sprint("gone", r)}
			users := []string{"u0", "u1", "u0", "u2"}
			epochs := make([]int64, len(conns))
			for i, c := range conns {
				j, err := s.Join(ctx, rid, c, users[i], json.RawMessage(`{"n":0}`))
				if err != nil {
					return fmt.Errorf("join %s/%s: %w", rid, c, err)
				}
				epochs[i] = j.Epoch
			}
			higher := epochs[1] + 3
			for _, hb := range []struct {
				conn string
				p    presence.HeartbeatParams
			}{
				{"a", presence.HeartbeatParams{Epoch: &epochs[0], PatchState: json.RawMessage(fmt.Sprintf(`{"n":%d}`, r+1))}},
				{"b", presence.HeartbeatParams{Epoch: &higher}},
				{conns[3], presence.HeartbeatParams{}},
			} {
				// On a loaded machine a conn may outlive its short TTL
				// between its join and this heartbeat: one more path to
				// the reaper, not a failure.
				if _, err := s.Heartbeat(ctx, rid, hb.conn, hb.p); err != nil && !errors.Is(err, presence.ErrConnNotFound) {
					return fmt.Errorf("heartbeat %s/%s: %w", rid, hb.conn, err)
				}
			}
			if _, err := s.Join(ctx, rid, "b", "u3", nil); err != nil {
				return fmt.Errorf("rejoin %s/b: %w", rid, err)
			}
			// Even rooms empty by leaves alone, as when every client
			// disconnects cleanly; odd rooms keep two conns to expire.
			left := conns[:2]
			if room%2 == 0 {
				left = []string{"a", "b", conns[2], conns[3]}
			}
			for _, c := range left {
				if err := s.Leave(ctx, rid, c); err != nil {
					return fmt.Errorf("leave %s/%s: %w", rid, c, err)
				}
			}
			ch := presence.Channel{Type: "t", Name: rid}
			if _, err := s.AcquireLock(ctx, ch, "edit", "u0", lockTTL); err != nil {
				return fmt.Errorf("lock %s: %w", rid, err)
			}
			n := int64(8 + len(left))
			if r%2 == 0 {
				// ErrLocked: the short TTL ran out first, as it may under load.
				if err := s.ReleaseLock(ctx, ch, "edit", "u0"); err != nil && !errors.Is(err, presence.ErrLocked) {
					return fmt.Errorf("unlock %s: %w", rid, err)
				}
				n++
			}
			ops.Add(n)
		}
	}
	return nil
}
