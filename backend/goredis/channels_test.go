package goredis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// The adapter conformance suite (backendtest, run by TestBackend) covers
// the contract of channel subscriptions; these tests cover what is
// particular to go-redis: its one-SSUBSCRIBE resubscription on a master
// holding channels of many slots, a slot map that lags behind a move,
// thousands of channels on one connection per master.

// channelSubscription opens a channel subscription on c for the test.
func channelSubscription(t *testing.T, c *Client, sharded bool, h backend.Handler) *channelSub {
	t.Helper()
	sub, err := c.SubscribeChannels(testContext(t), sharded, h)
	if err != nil {
		t.Fatalf("SubscribeChannels(sharded=%v): %v", sharded, err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub.(*channelSub)
}

// spublish publishes through the test server's own connection: SPUBLISH
// for sharded channels (to the slot's master), PUBLISH otherwise.
func spublish(t *testing.T, s *redistest.Server, sharded bool, ch, payload string) {
	t.Helper()
	cmd := "PUBLISH"
	if sharded {
		cmd = "SPUBLISH"
	}
	if r := s.Do(t, cmd, ch, payload); r.Error() != nil {
		t.Fatalf("%s %s: %v", cmd, ch, r.Err)
	}
}

// awaitAll publishes on every channel of pending every 100ms until each
// delivered one message to col: pub/sub loses what is published while a
// subscription is being restored.
func awaitAll(t *testing.T, s *redistest.Server, sharded bool, col *collector, channels []string) {
	t.Helper()
	awaitEvery(t, col, channels, func(ch string) { spublish(t, s, sharded, ch, "after") })
}

// awaitEvery is awaitAll with its own way to publish.
func awaitEvery(t *testing.T, col *collector, channels []string, publish func(ch string)) {
	t.Helper()
	pending := map[string]bool{}
	for _, ch := range channels {
		pending[ch] = true
	}
	seen := 0
	deadline := time.Now().Add(2 * testTimeout)
	for len(pending) > 0 {
		for ch := range pending {
			publish(ch)
		}
		time.Sleep(100 * time.Millisecond)
		col.mu.Lock()
		for _, m := range col.msgs[seen:] {
			delete(pending, m.Channel)
		}
		seen = len(col.msgs)
		col.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no message on %d channels (%v...) after publishing every 100ms", len(pending), first(pending))
		}
	}
}

func first(m map[string]bool) string {
	for k := range m {
		return k
	}
	return ""
}

// manySlots returns n channels with distinct hash tags, so spread over
// many slots and, on a cluster, every master.
func manySlots(p string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "{" + p + "-" + strconv.Itoa(i) + "}:events"
	}
	return out
}

// TestChannelsShardedEmbedded: the embedded server has no SSUBSCRIBE, and
// says so when the subscription opens, not at the first Add.
func TestChannelsShardedEmbedded(t *testing.T) {
	emb := redistest.Embedded(t) // started before checkLeaks: the server's goroutines are not the client's
	checkLeaks(t)
	c := newClient(t, emb, Options{})
	_, err := c.SubscribeChannels(testContext(t), true, func(backend.Message) {})
	if !errors.Is(err, ErrShardedUnsupported) {
		t.Fatalf("SubscribeChannels(sharded) on the embedded server: %v, want ErrShardedUnsupported", err)
	}
}

// TestChannelsReconnectManySlots kills the subscriptions' connections
// while each master's connection holds channels of many slots. go-redis
// resubscribes them in one SSUBSCRIBE, which a cluster refuses
// (CROSSSLOT); the adapter must send them again slot by slot. Every
// channel delivers again, and the loss counts once per connection and
// kill at most, not once per channel. Both protocols: with RESP3 the replies
// come as push messages.
func TestChannelsReconnectManySlots(t *testing.T) {
	for _, s := range []*redistest.Server{redistest.Standalone(t), redistest.Cluster(t)} {
		for _, v := range []struct {
			sharded bool
			proto   int
		}{{false, 2}, {true, 2}, {false, 3}, {true, 3}} {
			sharded := v.sharded
			t.Run(fmt.Sprintf("%s/sharded=%v/RESP%d", s.Name, sharded, v.proto), func(t *testing.T) {
				checkLeaks(t)
				c := newClient(t, s, Options{Protocol: v.proto})
				col := newCollector()
				sub := channelSubscription(t, c, sharded, col.handle)
				channels := manySlots(redistest.Prefix(t), 60)
				if err := sub.Add(testContext(t), channels...); err != nil {
					t.Fatal(err)
				}
				homes := len(sub.homes)
				for i := range s.Addrs {
					s.DoNode(t, i, "CLIENT", "KILL", "TYPE", "pubsub")
				}
				awaitAll(t, s, sharded, col, channels)
				// A connection restored on a node not killed yet is killed
				// again; still, one count per channel would be far more.
				n, most := sub.Resubscribed(), uint64(homes*len(s.Addrs))
				if n == 0 || n > most {
					t.Errorf("Resubscribed() = %d after killing %d connections on %d nodes, want 1..%d", n, homes, len(s.Addrs), most)
				}
				if err := sub.Alive(); err != nil {
					t.Errorf("Alive() = %v after every channel delivered again", err)
				}
			})
		}
	}
}

// TestChannelsShardedOneConnectionPerMaster: sharded channels of many
// slots share one connection per master, and each one is subscribed on
// its slot's master only.
func TestChannelsShardedOneConnectionPerMaster(t *testing.T) {
	s := redistest.Cluster(t) // started before checkLeaks: a shared server's goroutines are not the client's
	checkLeaks(t)
	c := newClient(t, s, Options{})
	col := newCollector()
	sub := channelSubscription(t, c, true, col.handle)
	channels := manySlots(redistest.Prefix(t), 90)
	if err := sub.Add(testContext(t), channels...); err != nil {
		t.Fatal(err)
	}
	if len(sub.homes) != len(s.Addrs) {
		t.Errorf("%d connections for channels on %d masters", len(sub.homes), len(s.Addrs))
	}
	for _, ch := range channels[:9] {
		owner := s.NodeForSlot(backend.KeySlot(ch))
		for i := range s.Addrs {
			r := s.DoNode(t, i, "PUBSUB", "SHARDNUMSUB", ch)
			want := int64(0)
			if i == owner {
				want = 1
			}
			if len(r.Elems) != 2 || r.Elems[1].Int != want {
				t.Errorf("PUBSUB SHARDNUMSUB %s on node %d: %v, want %d", ch, i, r, want)
			}
		}
	}
}

// TestChannelsMovedWhileAdding: a client whose slot map predates a slot
// move sends SSUBSCRIBE to the former owner, which answers MOVED; Add
// must still return only once the new owner confirmed (a message
// published right after it returns is delivered), without counting a
// resubscription (nothing was lost).
func TestChannelsMovedWhileAdding(t *testing.T) {
	s := redistest.Cluster(t) // started before checkLeaks: a shared server's goroutines are not the client's
	checkLeaks(t)
	c := newClient(t, s, Options{})
	ch := s.EmptySlotName(t, redistest.Prefix(t), "events")
	slot := backend.KeySlot(ch)
	from := s.NodeForSlot(slot)
	to := (from + 1) % len(s.Addrs)
	if _, err := c.Do(testContext(t), backend.K("GET", ch)); err != nil { // loads the slot map
		t.Fatal(err)
	}
	s.MoveSlot(t, slot, from, to)
	col := newCollector()
	sub := channelSubscription(t, c, true, col.handle)
	if err := sub.Add(testContext(t), ch); err != nil {
		t.Fatal(err)
	}
	if r := s.DoNode(t, to, "SPUBLISH", ch, "x"); r.Error() != nil || r.Int != 1 {
		t.Fatalf("SPUBLISH on the new owner right after Add: %v, want 1 receiver", r)
	}
	col.wait(t, 1)
	if n := sub.Resubscribed(); n != 0 {
		t.Errorf("Resubscribed() = %d, want 0: nothing was lost", n)
	}
}

// TestChannelsSlotMovedKeepsOthers: when one slot of a master moves, only
// its channel changes connection; the master's other channels stay
// subscribed (delivered with no gap), and the move counts once.
func TestChannelsSlotMovedKeepsOthers(t *testing.T) {
	for _, proto := range []int{2, 3} {
		t.Run("RESP"+strconv.Itoa(proto), func(t *testing.T) { testSlotMovedKeepsOthers(t, proto) })
	}
}

// testSlotMovedKeepsOthers runs TestChannelsSlotMovedKeepsOthers with one
// protocol: with RESP3 the SUNSUBSCRIBE comes as a push message.
func testSlotMovedKeepsOthers(t *testing.T, proto int) {
	s := redistest.Cluster(t) // started before checkLeaks: a shared server's goroutines are not the client's
	checkLeaks(t)
	c := newClient(t, s, Options{Protocol: proto})
	col := newCollector()
	sub := channelSubscription(t, c, true, col.handle)
	p := redistest.Prefix(t)
	moving := s.EmptySlotName(t, p, "events")
	from := s.NodeForSlot(backend.KeySlot(moving))
	var stay []string
	for i := 0; len(stay) < 5; i++ {
		ch := "{" + p + "-" + strconv.Itoa(i) + "}:events"
		if s.NodeForSlot(backend.KeySlot(ch)) == from && backend.KeySlot(ch) != backend.KeySlot(moving) {
			stay = append(stay, ch)
		}
	}
	if err := sub.Add(testContext(t), append([]string{moving}, stay...)...); err != nil {
		t.Fatal(err)
	}
	to := (from + 1) % len(s.Addrs)
	s.MoveSlot(t, backend.KeySlot(moving), from, to)
	deadline := time.Now().Add(testTimeout)
	for sub.Resubscribed() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Resubscribed() still 0 after the slot moved")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := sub.Resubscribed(); n != 1 {
		t.Errorf("Resubscribed() = %d after one slot moved, want 1", n)
	}
	// Published once each: the channels that stayed never had a gap.
	for _, ch := range stay {
		spublish(t, s, true, ch, "stay")
	}
	got := col.wait(t, len(stay))
	if len(got) != len(stay) {
		t.Errorf("%d messages for %d channels", len(got), len(stay))
	}
	if r := s.DoNode(t, to, "SPUBLISH", moving, "moved"); r.Int != 1 {
		t.Errorf("SPUBLISH on the new owner after Resubscribed grew: %v receivers, want 1", r)
	}
}

// TestChannelsAddWaitsForConfirmation: Add waits for the server's
// confirmation, which the reader takes after the running handler call:
// with the handler stuck, Add honours its context's deadline.
func TestChannelsAddWaitsForConfirmation(t *testing.T) {
	s := redistest.Standalone(t) // started before checkLeaks: a shared server's goroutines are not the client's
	checkLeaks(t)
	c := newClient(t, s, Options{})
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	sub := channelSubscription(t, c, false, func(backend.Message) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	})
	p := redistest.Prefix(t)
	if err := sub.Add(testContext(t), p+":a"); err != nil {
		t.Fatal(err)
	}
	spublish(t, s, false, p+":a", "block")
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := sub.Add(ctx, p+":b")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Add while the reader is stuck in the handler: %v, want DeadlineExceeded", err)
	}
	// Remove likewise: it waits for the running call of its channel.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if err := sub.Remove(ctx2, p+":a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Remove of the channel whose handler runs: %v, want DeadlineExceeded", err)
	}
	close(release)
	if err := sub.Add(testContext(t), p+":b"); err != nil {
		t.Errorf("Add after the handler returned: %v", err)
	}
}

// TestChannelsBadInput: an empty channel name is refused before anything
// is sent.
func TestChannelsBadInput(t *testing.T) {
	emb := redistest.Embedded(t) // started before checkLeaks: the server's goroutines are not the client's
	checkLeaks(t)
	c := newClient(t, emb, Options{})
	sub := channelSubscription(t, c, false, func(backend.Message) {})
	if err := sub.Add(testContext(t), "ok", ""); err == nil {
		t.Error("Add of an empty channel name: no error")
	}
	if n := sub.Channels(); n != 0 {
		t.Errorf("Channels() = %d after a refused Add", n)
	}
	if err := sub.Remove(testContext(t), ""); err == nil {
		t.Error("Remove of an empty channel name: no error")
	}
	if _, err := c.SubscribeChannels(testContext(t), false, nil); err == nil {
		t.Error("SubscribeChannels with a nil handler: no error")
	}
}

// TestChannelsClientClose: closing the client closes its channel
// subscriptions (no goroutine left), after which Add fails with
// ErrClosed.
func TestChannelsClientClose(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			checkLeaks(t)
			c := newClient(t, s, Options{})
			sub := channelSubscription(t, c, false, func(backend.Message) {})
			if err := sub.Add(testContext(t), redistest.Prefix(t)+":a"); err != nil {
				t.Fatal(err)
			}
			_ = c.Close()
			if err := sub.Add(testContext(t), "b"); !errors.Is(err, backend.ErrClosed) {
				t.Errorf("Add after the client closed: %v, want ErrClosed", err)
			}
			if err := sub.Remove(testContext(t), "a"); !errors.Is(err, backend.ErrClosed) {
				t.Errorf("Remove after the client closed: %v, want ErrClosed", err)
			}
			if _, err := c.SubscribeChannels(testContext(t), false, func(backend.Message) {}); !errors.Is(err, backend.ErrClosed) {
				t.Errorf("SubscribeChannels after Close: %v, want ErrClosed", err)
			}
		})
	}
}

// TestChannelsScale adds 10,000 channels in one call and checks they use
// one connection (classic) or one per master (sharded); it logs how long
// Add took. go test -v -run TestChannelsScale shows the figures.
func TestChannelsScale(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const n = 10000
	for _, s := range []*redistest.Server{redistest.Standalone(t), redistest.Cluster(t)} {
		for _, sharded := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/sharded=%v", s.Name, sharded), func(t *testing.T) {
				checkLeaks(t)
				c := newClient(t, s, Options{})
				col := newCollector()
				sub := channelSubscription(t, c, sharded, col.handle)
				channels := manySlots(redistest.Prefix(t), n)
				start := time.Now()
				if err := sub.Add(testContext(t), channels...); err != nil {
					t.Fatal(err)
				}
				took := time.Since(start)
				want := 1
				if sharded && s.Cluster {
					want = len(s.Addrs)
				}
				if len(sub.homes) != want {
					t.Errorf("%d connections for %d channels, want %d", len(sub.homes), n, want)
				}
				for _, i := range []int{0, n / 2, n - 1} {
					spublish(t, s, sharded, channels[i], "x")
				}
				col.wait(t, 3)
				start = time.Now()
				if err := sub.Remove(testContext(t), channels...); err != nil {
					t.Fatal(err)
				}
				t.Logf("%d channels: Add %v, Remove %v, %d connection(s)", n, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), len(sub.homes))
			})
		}
	}
}

// TestChannelsFailover: sharded channels follow their shard to the
// replica that replaces its master, after a graceful CLUSTER FAILOVER (the
// demoted master stays up) and after the master is killed: every channel
// delivers again, and the loss counts in Resubscribed. Classic channels
// keep delivering too.
func TestChannelsFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	checkLeaks(t)
	r := redistest.NewReplicated(t, 0)
	c := newClient(t, r.Server, Options{})
	col := newCollector()
	sub := channelSubscription(t, c, true, col.handle)
	channels := manySlots(redistest.Prefix(t), 30)
	if err := sub.Add(testContext(t), channels...); err != nil {
		t.Fatal(err)
	}
	publish := func(ch string) {
		if rep := r.DoKey(t, ch, "SPUBLISH", ch, "x"); rep.Error() != nil {
			t.Fatalf("SPUBLISH %s: %v", ch, rep.Err)
		}
	}
	awaitEvery(t, col, channels, publish)
	// A classic subscription alongside: its one connection may be on the
	// master that dies.
	classicCol := newCollector()
	classic := channelSubscription(t, c, false, classicCol.handle)
	if err := classic.Add(testContext(t), channels...); err != nil {
		t.Fatal(err)
	}
	publishClassic := func(ch string) {
		if rep := r.DoKey(t, ch, "PUBLISH", ch, "x"); rep.Error() != nil {
			t.Fatalf("PUBLISH %s: %v", ch, rep.Err)
		}
	}
	steps := []struct {
		name string
		do   func()
	}{
		{"CLUSTER FAILOVER", func() { r.Failover(t, 0) }},
		{"master killed", func() { r.KillMaster(t, 1) }},
	}
	for _, st := range steps {
		before := sub.Resubscribed()
		st.do()
		awaitEvery(t, col, channels, publish)
		classicCol.mu.Lock()
		classicCol.msgs = nil
		classicCol.mu.Unlock()
		awaitEvery(t, classicCol, channels, publishClassic)
		deadline := time.Now().Add(testTimeout)
		for sub.Resubscribed() == before {
			if time.Now().After(deadline) {
				t.Fatalf("%s: Resubscribed() still %d", st.name, before)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
