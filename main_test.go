package presence_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	_ "github.com/realtime-message/presence/backend/builtin" // presence.Open selects adapters by name
	"github.com/realtime-message/presence/backend/goredis"
	"github.com/realtime-message/presence/backend/rueidis"
	"github.com/realtime-message/presence/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// target is one backend adapter on one kind of server.
type target struct {
	name   string
	server *redistest.Server
	// connect returns a new client, closed when the test ends.
	connect func(t testing.TB) backend.Client
}

// forEachTarget runs fn for {rueidis, goredis} × {standalone, cluster,
// embedded}, each as a subtest "backend/server".
func forEachTarget(t *testing.T, fn func(t *testing.T, tg target)) {
	for _, srv := range redistest.Targets(t) {
		for _, b := range []string{"rueidis", "goredis"} {
			tg := target{name: b + "/" + srv.Name, server: srv}
			tg.connect = func(t testing.TB) backend.Client { return connectBackend(t, b, srv) }
			t.Run(tg.name, func(t *testing.T) { fn(t, tg) })
		}
	}
}

// connectBackend returns a new client of adapter b on srv, closed when
// the test ends.
func connectBackend(t testing.TB, b string, srv *redistest.Server) backend.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var c backend.Client
	var err error
	if b == "rueidis" {
		c, err = rueidis.New(ctx, rueidis.Options{Addrs: srv.Addrs})
	} else {
		c, err = goredis.New(ctx, goredis.Options{Addrs: srv.Addrs})
	}
	if err != nil {
		t.Fatalf("connect %s/%s: %v", b, srv.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newService builds a Service on c with a unique key prefix (unless cfg
// sets one) and the reaper off unless cfg turns it on.
func newService(t testing.TB, c backend.Client, cfg presence.Config) *presence.Service {
	t.Helper()
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = redistest.Prefix(t)
	}
	if cfg.ReaperInterval == 0 {
		cfg.ReaperInterval = -1
	}
	if _, ok := c.(backend.ChannelSubscriber); ok && cfg.PubSub == "" {
		// Classic pub/sub unless a test asks otherwise: the tests observe
		// with Subscribe*, which with sharded pub/sub subscribes new rooms
		// late and refuses users-all (tests of sharded mode set it).
		cfg.PubSub = presence.PubSubChannels
	}
	s, err := presence.New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.UnixMilli(1_800_000_000_000)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}
