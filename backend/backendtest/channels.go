package backendtest

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// Channel subscriptions (backend.ChannelSubscriber) are optional: an
// adapter without them runs presence in "pattern" mode. Each test runs
// with classic and with sharded pub/sub; sharded is skipped on the
// embedded server, which has no SSUBSCRIBE.

// channelTests are run by Run, each once per pub/sub kind.
var channelTests = []struct {
	name string
	fn   func(*testing.T, *suite, bool)
}{
	{"Deliver", testChannelsDeliver},
	{"AcrossSlots", testChannelsAcrossSlots},
	{"Order", testChannelsOrder},
	{"Remove", testChannelsRemove},
	{"ConcurrentAddRemove", testChannelsConcurrent},
	{"CloseWaitsForHandler", testChannelsClose},
	{"ContextCanceled", testChannelsContext},
	{"Resubscribed", testChannelsResubscribed},
	{"SlotMoved", testChannelsSlotMoved},
}

func testChannels(t *testing.T, s *suite) {
	for _, sharded := range []bool{false, true} {
		kind := "classic"
		if sharded {
			kind = "sharded"
		}
		t.Run(kind, func(t *testing.T) {
			if sharded && s.target.Embedded {
				t.Skip("the embedded server has no sharded pub/sub")
			}
			for _, tc := range channelTests {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, s, sharded) })
			}
		})
	}
}

// channelSub opens a channel subscription on c, closed when the test ends;
// it skips the test when the adapter has none.
func channelSub(t *testing.T, c backend.Client, sharded bool, h backend.Handler) backend.ChannelSubscription {
	t.Helper()
	cs, ok := c.(backend.ChannelSubscriber)
	if !ok {
		t.Skipf("%T is not a backend.ChannelSubscriber (optional)", c)
	}
	sub, err := cs.SubscribeChannels(ctx(t), sharded, h)
	if err != nil {
		t.Fatalf("SubscribeChannels(sharded=%v): %v", sharded, err)
	}
	if sub == nil {
		t.Fatal("SubscribeChannels returned a nil subscription")
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

func add(t *testing.T, sub backend.ChannelSubscription, channels ...string) {
	t.Helper()
	if err := sub.Add(ctx(t), channels...); err != nil {
		t.Fatalf("Add %q: %v", channels, err)
	}
}

func remove(t *testing.T, sub backend.ChannelSubscription, channels ...string) {
	t.Helper()
	if err := sub.Remove(ctx(t), channels...); err != nil {
		t.Fatalf("Remove %q: %v", channels, err)
	}
}

// pub publishes payload on channel the way events are: classic PUBLISH
// through the client, or SPUBLISH sent straight to the master of the
// channel's slot by the suite's own connection (a script's SPUBLISH runs
// there).
func (s *suite) pub(t *testing.T, c backend.Client, sharded bool, channel, payload string) {
	t.Helper()
	if !sharded {
		publish(t, c, channel, payload)
		return
	}
	if r := s.srv.DoNode(t, s.nodeOf(t, channel), "SPUBLISH", channel, payload); r.Error() != nil {
		t.Fatalf("SPUBLISH %s: %v", channel, r.Err)
	}
}

// subscribers counts the server-side subscriptions of channel over every
// node: PUBSUB NUMSUB, or SHARDNUMSUB for sharded channels.
func (s *suite) subscribers(t *testing.T, sharded bool, channel string) int64 {
	t.Helper()
	sub := "NUMSUB"
	if sharded {
		sub = "SHARDNUMSUB"
	}
	var n int64
	for i := range s.target.Addrs {
		r := s.srv.DoNode(t, i, "PUBSUB", sub, channel)
		if r.Error() != nil || len(r.Elems) != 2 {
			t.Fatalf("PUBSUB %s %s on %s: %v", sub, channel, s.target.Addrs[i], r)
		}
		k, err := r.Elems[1].AsInt()
		if err != nil {
			t.Fatalf("PUBSUB %s %s: %v", sub, channel, r)
		}
		n += k
	}
	return n
}

// waitSubscribers waits until the server counts want subscriptions of
// channel.
func (s *suite) waitSubscribers(t *testing.T, sharded bool, channel string, want int64) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		n := s.subscribers(t, sharded, channel)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server counts %d subscriptions of %s, want %d", n, channel, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testChannelsDeliver: a message published after Add returns is delivered
// once, with its channel and no pattern; a channel not added is not; adding
// a channel twice neither duplicates messages nor counts twice.
func testChannelsDeliver(t *testing.T, s *suite, sharded bool) {
	c := s.client(t)
	p := redistest.Prefix(t)
	in := newInbox(t)
	sub := channelSub(t, c, sharded, in.handle)
	if n := sub.Channels(); n != 0 {
		t.Errorf("Channels() = %d on a new subscription", n)
	}
	a, b := tag(p, "a"), tag(p, "b")
	add(t, sub, a)
	s.pub(t, c, sharded, a, "hello")
	want := backend.Message{Channel: a, Payload: "hello"}
	if m := in.next("message after Add"); m != want {
		t.Errorf("got %+v, want %+v", m, want)
	}
	s.pub(t, c, sharded, b, "not added")
	in.none("message on a channel never added")

	add(t, sub, a)
	if n := sub.Channels(); n != 1 {
		t.Errorf("Channels() = %d after adding one channel twice, want 1", n)
	}
	s.pub(t, c, sharded, a, "once")
	if m := in.next("message after a second Add"); m.Payload != "once" {
		t.Errorf("got %+v", m)
	}
	in.none("duplicate of a message on a channel added twice")
	s.waitSubscribers(t, sharded, a, 1)

	if st, ok := sub.(backend.SubscriptionState); !ok {
		t.Errorf("%T does not implement backend.SubscriptionState", sub)
	} else {
		if err := st.Alive(); err != nil {
			t.Errorf("Alive() = %v on a working subscription", err)
		}
		if pat := st.Pattern(); pat != "" {
			t.Errorf("Pattern() = %q, want \"\"", pat)
		}
	}
	if _, ok := sub.(backend.Resubscriber); !ok {
		t.Errorf("%T does not implement backend.Resubscriber", sub)
	}
}

// testChannelsAcrossSlots: channels of many slots, on every master of a
// cluster, added in one call, each deliver exactly once.
func testChannelsAcrossSlots(t *testing.T, s *suite, sharded bool) {
	c := s.client(t)
	p := redistest.Prefix(t)
	in := newInbox(t)
	sub := channelSub(t, c, sharded, in.handle)
	channels := thirds(p)
	for i := range 57 {
		channels = append(channels, tag(p+strconv.Itoa(i), "room"))
	}
	s.checkSpread(t, channels)
	add(t, sub, channels...)
	if n := sub.Channels(); n != len(channels) {
		t.Errorf("Channels() = %d, want %d", n, len(channels))
	}
	for _, ch := range channels {
		s.pub(t, c, sharded, ch, ch)
	}
	var got []string
	for range channels {
		m := in.next("message across slots")
		if m.Channel != m.Payload {
			t.Errorf("message %+v delivered with another channel", m)
		}
		got = append(got, m.Payload)
	}
	in.none("more messages than were published")
	slices.Sort(got)
	want := slices.Clone(channels)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("delivered %q, want %q", got, want)
	}
}

// testChannelsOrder: messages of one channel arrive in publish order,
// also while other channels' messages interleave.
func testChannelsOrder(t *testing.T, s *suite, sharded bool) {
	c := s.client(t)
	p := redistest.Prefix(t)
	var mu sync.Mutex
	last := map[string]int{}
	var wrong atomic.Int64
	done := make(chan struct{}, 1000)
	sub := channelSub(t, c, sharded, func(m backend.Message) {
		n, _ := strconv.Atoi(m.Payload)
		mu.Lock()
		if prev, ok := last[m.Channel]; ok && n != prev+1 || !ok && n != 0 {
			wrong.Add(1)
		}
		last[m.Channel] = n
		mu.Unlock()
		done <- struct{}{}
	})
	channels := thirds(p)
	add(t, sub, channels...)
	const per = 100
	for i := range per {
		for _, ch := range channels {
			s.pub(t, c, sharded, ch, strconv.Itoa(i))
		}
	}
	for range per * len(channels) {
		select {
		case <-done:
		case <-time.After(wait):
			t.Fatalf("not every message arrived within %v", wait)
		}
	}
	if n := wrong.Load(); n > 0 {
		t.Errorf("%d messages arrived out of their channel's publish order", n)
	}
}

// testChannelsRemove: after Remove returns, nothing more arrives for the
// channel and the server no longer counts the subscription; the others
// keep delivering; removing what is not subscribed is a no-op.
func testChannelsRemove(t *testing.T, s *suite, sharded bool) {
	c := s.client(t)
	p := redistest.Prefix(t)
	in := newInbox(t)
	sub := channelSub(t, c, sharded, in.handle)
	// Same slot: same node, so b's message cannot overtake a's.
	a, b := tag(p, "a"), tag(p, "b")
	add(t, sub, a, b)
	remove(t, sub, a)
	if n := sub.Channels(); n != 1 {
		t.Errorf("Channels() = %d after removing one of two, want 1", n)
	}
	s.pub(t, c, sharded, a, "removed")
	s.pub(t, c, sharded, b, "kept")
	if m := in.next("message of the kept channel"); m.Channel != b {
		t.Fatalf("got %+v after Remove of %s", m, a)
	}
	in.none("message after Remove")
	s.waitSubscribers(t, sharded, a, 0)
	s.waitSubscribers(t, sharded, b, 1)

	remove(t, sub, a, tag(p, "never"))
	if n := sub.Channels(); n != 1 {
		t.Errorf("Channels() = %d after removing channels not subscribed, want 1", n)
	}
	// Removed, then added again: delivered again.
	add(t, sub, a)
	s.pub(t, c, sharded, a, "again")
	if m := in.next("message after Add of a removed channel"); m.Payload != "again" {
		t.Errorf("got %+v", m)
	}
}

// testChannelsConcurrent: Add and Remove of many channels from many
// goroutines leave exactly the channels added last subscribed, on the
// client and on the server.
func testChannelsConcurrent(t *testing.T, s *suite, sharded bool) {
	c := s.client(t)
	p := redistest.Prefix(t)
	var mu sync.Mutex
	got := map[string]int{}
	sub := channelSub(t, c, sharded, func(m backend.Message) {
		mu.Lock()
		got[m.Channel]++
		mu.Unlock()
	})
	const workers, rounds = 12, 15
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := tag(p+strconv.Itoa(w), "c")
			for r := range rounds {
				if err := sub.Add(ctx(t), ch); err != nil {
					errs <- err
					return
				}
				// Odd workers end removed.
				if r < rounds-1 || w%2 == 1 {
					if err := sub.Remove(ctx(t), ch); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := sub.Channels(); n != workers/2 {
		t.Errorf("Channels() = %d, want %d", n, workers/2)
	}
	for w := range workers {
		ch := tag(p+strconv.Itoa(w), "c")
		s.waitSubscribers(t, sharded, ch, int64(1-w%2))
		s.pub(t, c, sharded, ch, "x")
	}
	deadline := time.Now().Add(wait)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= workers/2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(quiet)
	mu.Lock()
	defer mu.Unlock()
	for w := range workers {
		ch := tag(p+strconv.Itoa(w), "c")
		if want := 1 - w%2; got[ch] != want {
			t.Errorf("%s: %d messages, want %d", ch, got[ch], want)
		}
	}
}

// testChannelsClose: Close waits for the handler's last call, nothing is
// delivered afterwards, Add fails with ErrClosed, and Close is idempotent.
func testChannelsClose(t *testing.T, s *suite, sharded bool) {
	c := s.client(t)
	p := redistest.Prefix(t)
	entered := make(chan struct{}, 1)
	var returned, after atomic.Bool
	var closed atomic.Bool
	sub := channelSub(t, c, sharded, func(backend.Message) {
		if closed.Load() {
			after.Store(true)
		}
		select {
		case entered <- struct{}{}:
		default:
		}
		time.Sleep(quiet)
		returned.Store(true)
	})
	a := tag(p, "a")
	add(t, sub, a)
	s.pub(t, c, sharded, a, "x")
	select {
	case <-entered:
	case <-time.After(wait):
		t.Fatal("handler not called")
	}
	within(t, "ChannelSubscription.Close with a busy handler", func() {
		if err := sub.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	closed.Store(true)
	if !returned.Load() {
		t.Error("Close returned while the handler was still running")
	}
	s.pub(t, c, sharded, a, "after close")
	time.Sleep(quiet)
	if after.Load() {
		t.Error("handler called after Close returned")
	}
	if err := sub.Add(ctx(t), tag(p, "b")); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("Add after Close: %v, want ErrClosed", err)
	}
	if err := sub.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	s.waitSubscribers(t, sharded, a, 0)
}

// testChannelsContext: Add with a context already done fails with its
// error instead of waiting.
func testChannelsContext(t *testing.T, s *suite, sharded bool) {
	c := s.client(t)
	p := redistest.Prefix(t)
	in := newInbox(t)
	sub := channelSub(t, c, sharded, in.handle)
	cctx, cancel := context.WithCancel(ctx(t))
	cancel()
	var err error
	within(t, "Add with a canceled context", func() { err = sub.Add(cctx, tag(p, "a")) })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Add with a canceled context: %v, want context.Canceled", err)
	}
	// The subscription still works.
	add(t, sub, tag(p, "b"))
	s.pub(t, c, sharded, tag(p, "b"), "ok")
	if m := in.next("message after a canceled Add"); m.Channel != tag(p, "b") {
		t.Errorf("got %+v", m)
	}
}

// testChannelsResubscribed: after the server killed the subscription's
// connections, every channel is subscribed again by itself, and the loss
// counts in Resubscribed.
func testChannelsResubscribed(t *testing.T, s *suite, sharded bool) {
	if s.target.Embedded {
		t.Skip("the embedded server cannot kill a client's connection")
	}
	c := s.client(t)
	p := redistest.Prefix(t)
	in := newInbox(t)
	sub := channelSub(t, c, sharded, in.handle)
	r, ok := sub.(backend.Resubscriber)
	if !ok {
		t.Fatalf("%T does not implement backend.Resubscriber", sub)
	}
	channels := thirds(p)
	add(t, sub, channels...)
	for _, addr := range s.target.Addrs {
		killPubSubClients(t, addr)
	}
	deadline := time.Now().Add(wait)
	for r.Resubscribed() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Resubscribed() still 0 %v after the connections were killed", wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
	awaitEach(t, s, c, sharded, in, channels)
	if n := sub.Channels(); n != len(channels) {
		t.Errorf("Channels() = %d after resubscribing, want %d", n, len(channels))
	}
}

// awaitEach publishes on each channel every 200ms until one message of
// each arrived: a resubscription's gap loses what it publishes.
func awaitEach(t *testing.T, s *suite, c backend.Client, sharded bool, in *inbox, channels []string) {
	t.Helper()
	pending := map[string]bool{}
	for _, ch := range channels {
		pending[ch] = true
	}
	deadline := time.Now().Add(2 * wait)
	for len(pending) > 0 {
		for ch := range pending {
			s.pub(t, c, sharded, ch, "after")
		}
		timer := time.After(200 * time.Millisecond)
	drain:
		for {
			select {
			case m := <-in.ch:
				delete(pending, m.Channel)
			case <-timer:
				break drain
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message on %v within %v of publishing every 200ms", pending, 2*wait)
		}
	}
}

// testChannelsSlotMoved: when a sharded channel's slot moves to another
// master, that master's SPUBLISH reaches the subscription: the old owner
// pushes SUNSUBSCRIBE, and the adapter must subscribe on the new owner by
// itself (counted in Resubscribed). Channels of other slots are not
// disturbed. Classic channels are not tied to slots: the test checks they
// keep delivering.
func testChannelsSlotMoved(t *testing.T, s *suite, sharded bool) {
	if !s.target.Cluster {
		t.Skip("slots move only on a cluster")
	}
	c := s.client(t)
	p := redistest.Prefix(t)
	in := newInbox(t)
	sub := channelSub(t, c, sharded, in.handle)
	moving := s.srv.EmptySlotName(t, p, "moving")
	channels := append(thirds(p), moving)
	add(t, sub, channels...)
	from := s.nodeOf(t, moving)
	to := (from + 1) % len(s.target.Addrs)
	s.srv.MoveSlot(t, backend.KeySlot(moving), from, to)
	if sharded {
		r := sub.(backend.Resubscriber)
		deadline := time.Now().Add(wait)
		for r.Resubscribed() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("Resubscribed() still 0 %v after the channel's slot moved", wait)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	awaitEach(t, s, c, sharded, in, channels)
	if sharded {
		s.waitSubscribers(t, true, moving, 1)
		if n := s.srv.DoNode(t, to, "PUBSUB", "SHARDNUMSUB", moving); n.Error() != nil || len(n.Elems) != 2 || n.Elems[1].Int != 1 {
			t.Errorf("PUBSUB SHARDNUMSUB %s on the new owner: %v, want 1", moving, n)
		}
	}
}
