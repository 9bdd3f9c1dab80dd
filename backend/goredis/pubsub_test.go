package goredis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// collector records the messages of one subscription.
type collector struct {
	mu   sync.Mutex
	msgs []backend.Message
	more chan struct{}
}

func newCollector() *collector { return &collector{more: make(chan struct{}, 1)} }

func (c *collector) handle(m backend.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
}

// wait waits until n messages arrived and returns them.
func (c *collector) wait(t *testing.T, n int) []backend.Message {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		got := append([]backend.Message(nil), c.msgs...)
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-c.more:
		case <-deadline:
			t.Fatalf("got %d messages, want %d: %v", len(got), n, got)
		}
	}
}

// TestSubscriptionReconnect kills the subscriber's connection on the
// server: go-redis dials again and resubscribes, and the handler keeps
// receiving.
func TestSubscriptionReconnect(t *testing.T) {
	for _, s := range []*redistest.Server{redistest.Standalone(t), redistest.Cluster(t)} {
		t.Run(s.Name, func(t *testing.T) {
			checkLeaks(t)
			c := newClient(t, s, Options{})
			ctx := testContext(t)
			p := redistest.Prefix(t)
			col := newCollector()
			sub, err := c.PSubscribe(ctx, p+":*", col.handle)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Publish(ctx, p+":a", "1"); err != nil {
				t.Fatal(err)
			}
			col.wait(t, 1)
			killed := int64(0)
			for i := range s.Addrs {
				killed += s.DoNode(t, i, "CLIENT", "KILL", "TYPE", "pubsub").Int
			}
			if killed == 0 {
				t.Fatal("CLIENT KILL TYPE pubsub killed nothing")
			}
			// Publish until the resubscribed connection gets one.
			for i := 0; ; i++ {
				if err := c.Publish(ctx, p+":b", "2"); err != nil {
					t.Fatal(err)
				}
				col.mu.Lock()
				n := len(col.msgs)
				col.mu.Unlock()
				if n > 1 {
					break
				}
				if i == 200 {
					t.Fatal("no message after the subscriber's connection was killed")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err := sub.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSubscriptionClose checks that Close waits for a running handler,
// that no handler runs after Close, and that Close is idempotent.
func TestSubscriptionClose(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			checkLeaks(t)
			c := newClient(t, s, Options{})
			ctx := testContext(t)
			p := redistest.Prefix(t)
			var running, after atomic.Int32
			var closed atomic.Bool
			entered := make(chan struct{}, 1)
			release := make(chan struct{})
			sub, err := c.PSubscribe(ctx, p+":*", func(backend.Message) {
				if closed.Load() {
					after.Add(1)
				}
				running.Add(1)
				select {
				case entered <- struct{}{}:
				default:
				}
				<-release
				running.Add(-1)
			})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if err := c.Publish(ctx, fmt.Sprintf("%s:%d", p, i), "x"); err != nil {
					t.Fatal(err)
				}
			}
			<-entered
			done := make(chan struct{})
			go func() {
				_ = sub.Close()
				closed.Store(true)
				close(done)
			}()
			select {
			case <-done:
				t.Fatal("Close returned while the handler was running")
			case <-time.After(50 * time.Millisecond):
			}
			close(release)
			<-done
			if running.Load() != 0 || after.Load() != 0 {
				t.Errorf("handler running=%d, calls after Close=%d", running.Load(), after.Load())
			}
			if err := sub.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			// The client is not affected, and Close of the client does not
			// touch the closed subscription again.
			if err := c.Publish(ctx, p+":z", "x"); err != nil {
				t.Error(err)
			}
			if err := c.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestSubscriptionOrder checks that the messages of a channel arrive in
// publishing order, on a cluster too where channels live on different
// nodes, and that two subscriptions are independent.
func TestSubscriptionOrder(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			checkLeaks(t)
			c := newClient(t, s, Options{})
			ctx := testContext(t)
			p := redistest.Prefix(t)
			// Channels on every node of a cluster.
			var channels []string
			nodes := map[int]bool{}
			for i := 0; len(channels) < 6 || len(nodes) < len(s.Addrs); i++ {
				ch := fmt.Sprintf("%s:{%d}", p, i)
				nodes[s.NodeForSlot(backend.KeySlot(ch))] = true
				channels = append(channels, ch)
			}
			all, first := newCollector(), newCollector()
			if _, err := c.PSubscribe(ctx, p+":*", all.handle); err != nil {
				t.Fatal(err)
			}
			if _, err := c.PSubscribe(ctx, channels[0], first.handle); err != nil {
				t.Fatal(err)
			}
			const n = 100
			for i := range n {
				for j, ch := range channels {
					cmd := backend.C("PUBLISH", nil, ch, fmt.Sprint(i))
					if j%2 == 0 { // half through Publish, half through Do
						if err := c.Publish(ctx, ch, fmt.Sprint(i)); err != nil {
							t.Fatal(err)
						}
					} else if r := mustDo(t, c, cmd); r[0].Kind != backend.KindInt {
						t.Fatalf("PUBLISH: %v", r[0])
					}
				}
			}
			next := map[string]int{}
			for _, m := range all.wait(t, n*len(channels)) {
				if m.Pattern != p+":*" || m.Payload != fmt.Sprint(next[m.Channel]) {
					t.Fatalf("message %+v, want payload %d", m, next[m.Channel])
				}
				next[m.Channel]++
			}
			for i, m := range first.wait(t, n) {
				if m.Payload != fmt.Sprint(i) || m.Channel != channels[0] || m.Pattern != channels[0] {
					t.Fatalf("message %d of %s: %+v", i, channels[0], m)
				}
			}
			c.Close() // closes both subscriptions, checked by checkLeaks
		})
	}
}

func TestPSubscribeContext(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			checkLeaks(t)
			c := newClient(t, s, Options{})
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := c.PSubscribe(ctx, redistest.Prefix(t)+":*", func(backend.Message) {}); !errors.Is(err, context.Canceled) {
				t.Errorf("PSubscribe with a canceled context: %v", err)
			}
			if _, err := c.PSubscribe(testContext(t), "x", nil); err == nil {
				t.Error("PSubscribe with a nil handler succeeded")
			}
		})
	}
}
