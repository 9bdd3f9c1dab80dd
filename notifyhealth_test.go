package presence_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// reaperCheck returns Health's reaper check, failing the test when the
// node is unhealthy: a degraded reaper never fails it.
func reaperCheck(t *testing.T, s *presence.Service) (presence.HealthCheck, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	checks, ok := s.Health(ctx)
	if !ok {
		t.Fatalf("not healthy: %+v", checks)
	}
	for _, c := range checks {
		if c.Name == "reaper" {
			return c, true
		}
	}
	return presence.HealthCheck{}, false
}

// TestHealthNotifyReaper: a node whose notify reaper runs on
// notifications has a passing reaper check; one that sweeps instead (the
// embedded server publishes none) passes too, degraded with the reason;
// a sweep reaper has no check.
func TestHealthNotifyReaper(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), notifyConfig())
		want := presence.ReaperNotify
		if tg.server.Embedded {
			want = presence.ReaperSweep
		}
		waitActive(t, s, want)
		c, found := reaperCheck(t, s)
		switch {
		case !found || !c.OK || c.Error != "":
			t.Fatalf("reaper check %+v (found %v): want one, passing", c, found)
		case want == presence.ReaperNotify && c.Degraded != "":
			t.Fatalf("reaper check %+v: degraded while the notify reaper runs", c)
		case want == presence.ReaperSweep && !strings.Contains(c.Degraded, "fell back to sweeping"):
			t.Fatalf("reaper check %+v: want degraded, falling back to sweeping", c)
		}
		sweep := newService(t, tg.connect(t), presence.Config{})
		if c, found := reaperCheck(t, sweep); found {
			t.Fatalf("a sweep reaper has a check: %+v", c)
		}
	})
}

// TestHealthNotifyReaperLostMaster: a master's subscription down (here
// its server gone) degrades the reaper check, naming the master, while
// the node's check of that master fails.
func TestHealthNotifyReaperLostMaster(t *testing.T) {
	for _, b := range []string{"rueidis", "goredis"} {
		t.Run(b, func(t *testing.T) {
			srv := redistest.NewStandalone(t)
			s := newService(t, connectBackend(t, b, srv), notifyConfig())
			waitActive(t, s, presence.ReaperNotify)
			if c, _ := reaperCheck(t, s); c.Degraded != "" {
				t.Fatalf("reaper check %+v: degraded before the fault", c)
			}
			if err := srv.Stop(); err != nil {
				t.Fatal(err)
			}
			var checks []presence.HealthCheck
			eventually(t, func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				checks, _ = s.Health(ctx)
				for _, c := range checks {
					if c.Name == "reaper" {
						return c.OK && strings.Contains(c.Degraded, "expired-key events lost")
					}
				}
				return false
			}, "the reaper check never said the master's events are lost")
			if st := s.ReaperStatus(); st.Active != presence.ReaperNotify || st.Subscription == nil {
				t.Fatalf("status %+v: want notify, its subscription down", st)
			}
			for _, c := range checks {
				if strings.HasPrefix(c.Name, "redis ") && c.OK {
					t.Fatalf("checks %+v: the stopped server answers", checks)
				}
			}
		})
	}
}

// configFlaky is a client whose per-master CONFIG fails while failing is
// set, as a master unreachable in the middle of a failover would.
type configFlaky struct {
	backend.Client
	failing atomic.Bool
	calls   atomic.Int32 // CONFIG calls refused
}

func (c *configFlaky) PSubscribeEachMaster(ctx context.Context, pattern string, h backend.Handler) (backend.Subscription, error) {
	return c.Client.(backend.NodeSubscriber).PSubscribeEachMaster(ctx, pattern, h)
}

func (c *configFlaky) Cluster() bool { return c.Client.(backend.MasterRunner).Cluster() }

func (c *configFlaky) EachMaster(ctx context.Context, cmds []backend.Cmd, fn func(string, []backend.Reply, error)) error {
	if c.failing.Load() && cmds[0].Name == "CONFIG" {
		c.calls.Add(1)
		return errors.New("configFlaky: master unreachable")
	}
	return c.Client.(backend.MasterRunner).EachMaster(ctx, cmds, fn)
}

// After a subscription is re-established the notify reaper checks the
// masters' setting at once (a promoted replica may lack it); while that
// check fails for want of a master, it keeps running on notifications
// and retries, rather than falling back to sweeping until the backstop.
func TestNotifyReaperRechecksAfterResubscribing(t *testing.T) {
	srv := redistest.Standalone(t)
	for _, b := range []string{"rueidis", "goredis"} {
		t.Run(b, func(t *testing.T) {
			c := &configFlaky{Client: connectBackend(t, b, srv)}
			cfg := notifyConfig()
			cfg.ReaperInterval = 50 * time.Millisecond // how often it looks at its subscription
			s := newService(t, c, cfg)
			waitActive(t, s, presence.ReaperNotify)
			c.failing.Store(true)
			kill := []backend.Cmd{{Name: "CLIENT", Args: []string{"KILL", "TYPE", "pubsub"}}}
			if err := c.Client.(backend.MasterRunner).EachMaster(ctxT(t), kill, func(string, []backend.Reply, error) {}); err != nil {
				t.Fatal(err)
			}
			eventually(t, func() bool { return c.calls.Load() >= 5 }, "the setting was not checked again after the resubscription")
			if st := s.ReaperStatus(); st.Active != presence.ReaperNotify {
				t.Fatalf("status %+v: fell back while a check could not reach a master", st)
			}
			c.failing.Store(false)
			l := watchLeaves(t, s)
			before := s.ReaperStatus().Notified
			if _, err := s.Join(ctxT(t), "r0", "c1", "u1", nil); err != nil {
				t.Fatal(err)
			}
			l.wait(t, "r0/c1")
			eventually(t, func() bool { return s.ReaperStatus().Notified > before }, "the conn was not reaped on its expired event")
		})
	}
}
