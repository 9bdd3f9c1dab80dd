package presence_test

import (
	"context"
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
	c, err := rueidis.New(ctx, rueidis.Options{Addrs: srv.Addrs, Embedded: srv.Embedded})
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
