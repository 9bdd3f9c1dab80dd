package presence_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// forEachRealTarget is forEachTarget without the embedded server, which
// publishes no keyspace notifications (TestNotifyReaperEmbeddedFallsBack).
func forEachRealTarget(t *testing.T, fn func(t *testing.T, tg target)) {
	forEachTarget(t, func(t *testing.T, tg target) {
		if tg.server.Embedded {
			t.Skip("the embedded server publishes no keyspace notifications")
		}
		fn(t, tg)
	})
}

// notifyConfig is a notify reaper whose sweeps are an hour apart, so that
// only an expired-key event can explain a leave seen within the test.
func notifyConfig() presence.Config {
	return presence.Config{
		Reaper:                 presence.ReaperNotify,
		ReaperConfigureNotify:  true,
		TTL:                    time.Second,
		ReaperInterval:         time.Hour,
		ReaperBackstopInterval: time.Hour,
	}
}

func waitActive(t *testing.T, s *presence.Service, want string) presence.ReaperStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := s.ReaperStatus()
		if st.Active == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("reaper status %+v, want active %q", st, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventually waits for cond: counters are updated just after the leave
// event they account for is published.
func eventually(t *testing.T, cond func() bool, format string, args ...any) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf(format, args...)
		}
	}
}

// leaves collects the leave events of s's prefix.
type leaves struct {
	mu   sync.Mutex
	seen map[string]time.Time // room/conn → when its leave arrived
	ch   chan string
}

func watchLeaves(t *testing.T, s *presence.Service) *leaves {
	t.Helper()
	l := &leaves{seen: map[string]time.Time{}, ch: make(chan string, 1024)}
	sub, err := s.Subscribe(ctxT(t), func(e presence.Event) {
		if e.Type != "leave" {
			return
		}
		id := e.RoomID + "/" + e.ConnID
		l.mu.Lock()
		l.seen[id] = time.Now()
		l.mu.Unlock()
		l.ch <- id
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	return l
}

// wait returns when every id has left, and when each did.
func (l *leaves) wait(t *testing.T, ids ...string) map[string]time.Time {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		l.mu.Lock()
		missing := 0
		for _, id := range ids {
			if _, ok := l.seen[id]; !ok {
				missing++
			}
		}
		out := make(map[string]time.Time, len(l.seen))
		for k, v := range l.seen {
			out[k] = v
		}
		l.mu.Unlock()
		if missing == 0 {
			return out
		}
		select {
		case <-l.ch:
		case <-timeout:
			t.Fatalf("%d of %v never left (seen %v)", missing, ids, out)
		}
	}
}

// roomsOnEveryMaster returns one room per master of srv (one room when
// standalone), so a test covers every node's notifications.
func roomsOnEveryMaster(s *presence.Service, srv *redistest.Server) []string {
	if len(srv.Addrs) == 1 {
		return []string{"r0"}
	}
	byNode := map[int]string{}
	for i := 0; len(byNode) < len(srv.Addrs) && i < 10000; i++ {
		room := "r" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		n := srv.NodeForSlot(backend.KeySlot(s.Keys().Conns(room)))
		if _, ok := byNode[n]; !ok {
			byNode[n] = room
		}
	}
	out := make([]string, 0, len(byNode))
	for _, r := range byNode {
		out = append(out, r)
	}
	return out
}

// A conn whose heartbeats stop leaves through its key's expired event, on
// every master: the sweep is an hour away.
func TestNotifyReaperLeavesOnExpiry(t *testing.T) {
	forEachRealTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), notifyConfig())
		waitActive(t, s, presence.ReaperNotify)
		l := watchLeaves(t, s)
		ctx := ctxT(t)
		var ids []string
		epochs := map[string]int64{}
		rooms := roomsOnEveryMaster(s, tg.server)
		for _, room := range rooms {
			j, err := s.Join(ctx, room, "c1", "u1", nil)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, room+"/c1")
			epochs[room] = j.Epoch
		}
		l.wait(t, ids...)
		eventually(t, func() bool { return s.ReaperStatus().Notified >= uint64(len(ids)) },
			"want %d conns reaped by notification", len(ids))
		for _, room := range rooms {
			snap, err := s.Snapshot(ctx, room)
			if err != nil || len(snap) != 0 {
				t.Fatalf("snapshot of %s after the leave: %v %v", room, snap, err)
			}
			// The reaped conn's epoch is remembered: a rejoin is newer.
			j, err := s.Join(ctx, room, "c1", "u1", nil)
			if err != nil || j.Epoch <= epochs[room] {
				t.Fatalf("rejoin of %s: epoch %d (was %d), %v", room, j.Epoch, epochs[room], err)
			}
			if err := s.Leave(ctx, room, "c1"); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// A conn whose key expires before its last heartbeat is older than the
// lookback is reaped when it is, not at the event: a rejoin keeps being
// strictly newer, and a node's clock may be behind.
func TestNotifyReaperWaitsForTheLookback(t *testing.T) {
	forEachRealTarget(t, func(t *testing.T, tg target) {
		cfg := notifyConfig()
		cfg.ReaperLookback = 3 * time.Second
		s := newService(t, tg.connect(t), cfg)
		waitActive(t, s, presence.ReaperNotify)
		l := watchLeaves(t, s)
		joined := time.Now()
		if _, err := s.Join(ctxT(t), "r0", "c1", "u1", nil); err != nil {
			t.Fatal(err)
		}
		at := l.wait(t, "r0/c1")["r0/c1"]
		if took := at.Sub(joined); took < cfg.ReaperLookback {
			t.Fatalf("left %v after its join, before the %v lookback", took, cfg.ReaperLookback)
		}
	})
}

// A notification that never comes (here the key is deleted, which
// publishes no expired event) is made up for by the backstop sweep.
func TestNotifyReaperBackstopCatchesLostNotifications(t *testing.T) {
	forEachRealTarget(t, func(t *testing.T, tg target) {
		cfg := notifyConfig()
		cfg.ReaperBackstopInterval = time.Second
		c := tg.connect(t)
		s := newService(t, c, cfg)
		waitActive(t, s, presence.ReaperNotify)
		l := watchLeaves(t, s)
		ctx := ctxT(t)
		if _, err := s.Join(ctx, "r0", "c1", "u1", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Do(ctx, backend.K("DEL", s.Keys().Conn("r0", "c1"))); err != nil {
			t.Fatal(err)
		}
		l.wait(t, "r0/c1")
		eventually(t, func() bool { return s.Stats().Reaped == 1 }, "want the conn reaped")
		if st := s.ReaperStatus(); st.Notified != 0 {
			t.Fatalf("status %+v: want the conn reaped by the sweep, not by a notification", st)
		}
	})
}

// Close ends the subscriptions (one per master) and every goroutine of
// the notify reaper.
func TestNotifyReaperCloseLeaksNothing(t *testing.T) {
	forEachRealTarget(t, func(t *testing.T, tg target) {
		c := tg.connect(t)
		// A first service warms the client's connections to every node,
		// which outlive a service by design.
		warm := newService(t, c, notifyConfig())
		waitActive(t, warm, presence.ReaperNotify)
		warm.Close()
		ignore := goleak.IgnoreCurrent()
		s := newService(t, c, notifyConfig())
		waitActive(t, s, presence.ReaperNotify)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		goleak.VerifyNone(t, ignore)
	})
}

// logBuffer captures a service's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A server whose notify-keyspace-events lacks expired events, not to be
// configured: the node logs an error naming the setting and sweeps every
// ReaperInterval; told to configure it, the node sets it and subscribes.
func TestNotifyReaperMisconfiguredServerFallsBackToSweep(t *testing.T) {
	srv := redistest.NewStandalone(t) // its own server: notify-keyspace-events is ""
	for _, b := range []string{"rueidis", "goredis"} {
		t.Run(b, func(t *testing.T) {
			c := connectBackend(t, b, srv)
			var logs logBuffer
			cfg := notifyConfig()
			cfg.ReaperConfigureNotify = false
			cfg.ReaperInterval = 100 * time.Millisecond
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			s := newService(t, c, cfg)
			st := waitActive(t, s, presence.ReaperSweep)
			if st.Mode != presence.ReaperNotify || st.Reason == nil || !strings.Contains(st.Reason.Error(), "notify-keyspace-events") {
				t.Fatalf("status %+v: want notify configured, sweep running, and the setting named", st)
			}
			l := watchLeaves(t, s)
			if _, err := s.Join(ctxT(t), "r0", "c1", "u1", nil); err != nil {
				t.Fatal(err)
			}
			l.wait(t, "r0/c1")
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "notify-keyspace-events") {
				t.Fatalf("no error log naming the setting:\n%s", logs.String())
			}

			cfg.ReaperConfigureNotify = true
			cfg.Logger = nil
			s2 := newService(t, c, cfg)
			waitActive(t, s2, presence.ReaperNotify)
			r, err := c.Do(ctxT(t), backend.Cmd{Name: "CONFIG", Args: []string{"GET", "notify-keyspace-events"}})
			if err != nil {
				t.Fatal(err)
			}
			kv, _ := r[0].AsStrings()
			if len(kv) != 2 || !strings.Contains(kv[1], "E") || !strings.ContainsAny(kv[1], "xA") {
				t.Fatalf("notify-keyspace-events after configuring: %v", kv)
			}
			// Leave the server as found for the other backend's run.
			if _, err := c.Do(ctxT(t), backend.Cmd{Name: "CONFIG", Args: []string{"SET", "notify-keyspace-events", ""}}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The embedded server publishes no keyspace notifications: the notify
// reaper says so and sweeps.
func TestNotifyReaperEmbeddedFallsBack(t *testing.T) {
	srv := redistest.Embedded(t)
	for _, b := range []string{"rueidis", "goredis"} {
		t.Run(b, func(t *testing.T) {
			cfg := notifyConfig()
			cfg.ReaperInterval = 100 * time.Millisecond
			s := newService(t, connectBackend(t, b, srv), cfg)
			st := waitActive(t, s, presence.ReaperSweep)
			if st.Reason == nil {
				t.Fatalf("status %+v: want the reason notify is unavailable", st)
			}
			l := watchLeaves(t, s)
			if _, err := s.Join(ctxT(t), "r0", "c1", "u1", nil); err != nil {
				t.Fatal(err)
			}
			l.wait(t, "r0/c1")
		})
	}
}

// Events published while a node subscription was reconnecting are lost:
// once it is back, the reaper sweeps at once rather than at the backstop.
func TestNotifyReaperSweepsAfterResubscribing(t *testing.T) {
	forEachRealTarget(t, func(t *testing.T, tg target) {
		cfg := notifyConfig()
		cfg.ReaperInterval = 100 * time.Millisecond // how often it looks at its subscription
		c := tg.connect(t)
		s := newService(t, c, cfg)
		waitActive(t, s, presence.ReaperNotify)
		ctx := ctxT(t)
		if _, err := s.Join(ctx, "r0", "c1", "u1", nil); err != nil {
			t.Fatal(err)
		}
		// As if its expired event had been lost: the key is gone, no event.
		if _, err := c.Do(ctx, backend.K("DEL", s.Keys().Conn("r0", "c1"))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(cfg.TTL + 200*time.Millisecond) // past the lookback
		if s.Stats().Reaped != 0 {
			t.Fatal("reaped before any sweep")
		}
		kill := []backend.Cmd{{Name: "CLIENT", Args: []string{"KILL", "TYPE", "pubsub"}}}
		err := c.(backend.MasterRunner).EachMaster(ctx, kill, func(addr string, r []backend.Reply, err error) {
			if err == nil {
				err = r[0].Error()
			}
			if err != nil {
				t.Errorf("%s: CLIENT KILL: %v", addr, err)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return s.Stats().Reaped == 1 }, "no sweep after the subscription came back")
	})
}

// Every notify node receives every expired event: racing, they still
// remove each conn, and publish its leave, exactly once.
func TestNotifyReapersOnManyNodesReapOnce(t *testing.T) {
	forEachRealTarget(t, func(t *testing.T, tg target) {
		cfg := notifyConfig()
		cfg.KeyPrefix = redistest.Prefix(t)
		a := newService(t, tg.connect(t), cfg)
		b := newService(t, tg.connect(t), cfg)
		waitActive(t, a, presence.ReaperNotify)
		waitActive(t, b, presence.ReaperNotify)
		var mu sync.Mutex
		count := map[string]int{}
		sub, err := a.Subscribe(ctxT(t), func(e presence.Event) {
			if e.Type == "leave" {
				mu.Lock()
				count[e.RoomID+"/"+e.ConnID]++
				mu.Unlock()
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		const n = 24
		for i := range n {
			room := []string{"r0", "r1", "r2", "r3"}[i%4]
			if _, err := a.Join(ctxT(t), room, "c"+string(rune('a'+i)), "u", nil); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, func() bool { return a.Stats().Reaped+b.Stats().Reaped == n }, "want %d conns reaped", n)
		eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(count) == n }, "want %d leave events", n)
		time.Sleep(300 * time.Millisecond) // a duplicate would come by now
		mu.Lock()
		defer mu.Unlock()
		if len(count) != n {
			t.Fatalf("%d conns left, want %d: %v", len(count), n, count)
		}
		for id, c := range count {
			if c != 1 {
				t.Fatalf("%s left %d times", id, c)
			}
		}
		if got := a.Stats().Reaped + b.Stats().Reaped; got != n {
			t.Fatalf("reaped %d, want %d", got, n)
		}
	})
}
