package backendtest

import (
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// inbox collects the messages of a subscription.
type inbox struct {
	t  *testing.T
	ch chan backend.Message
}

func newInbox(t *testing.T) *inbox {
	return &inbox{t: t, ch: make(chan backend.Message, 1000)}
}

func (in *inbox) handle(m backend.Message) {
	select {
	case in.ch <- m:
	default:
		in.t.Errorf("backendtest: inbox full, dropped %v", m)
	}
}

// next returns the next message, failing the test after wait.
func (in *inbox) next(what string) backend.Message {
	in.t.Helper()
	select {
	case m := <-in.ch:
		return m
	case <-time.After(wait):
		in.t.Fatalf("%s: no message within %v", what, wait)
		return backend.Message{}
	}
}

// none fails the test if a message arrives within quiet.
func (in *inbox) none(what string) {
	in.t.Helper()
	select {
	case m := <-in.ch:
		in.t.Errorf("%s: unexpected message %+v", what, m)
	case <-time.After(quiet):
	}
}

func subscribe(t *testing.T, c backend.Client, pattern string, h backend.Handler) backend.Subscription {
	t.Helper()
	sub, err := c.PSubscribe(ctx(t), pattern, h)
	if err != nil {
		t.Fatalf("PSubscribe %s: %v", pattern, err)
	}
	if sub == nil {
		t.Fatalf("PSubscribe %s returned a nil Subscription", pattern)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

func publish(t *testing.T, c backend.Client, channel, payload string) {
	t.Helper()
	if err := c.Publish(ctx(t), channel, payload); err != nil {
		t.Fatalf("Publish %s: %v", channel, err)
	}
}

// testPubSub: a message published after PSubscribe returns is delivered
// with its pattern, channel and payload; messages one client publishes on
// one channel, each after the previous Publish returned, arrive in that
// order (room events rely on it); after Subscription.Close none arrives.
func testPubSub(t *testing.T, s *suite) {
	c, other := s.client(t), s.client(t)
	p := redistest.Prefix(t)
	in := newInbox(t)
	sub := subscribe(t, c, p+":*", in.handle)

	publish(t, c, p+":a", "hello")
	want := backend.Message{Pattern: p + ":*", Channel: p + ":a", Payload: "hello"}
	if m := in.next("first message"); m != want {
		t.Errorf("got %+v, want %+v", m, want)
	}
	// From another client, and binary-safe.
	payload := "a\x00b\r\n{\"x\":1} ✓"
	publish(t, other, p+":b", payload)
	if m := in.next("message from another client"); m.Channel != p+":b" || m.Payload != payload {
		t.Errorf("got %+v, want channel %s payload %q", m, p+":b", payload)
	}
	// A channel the pattern does not match.
	publish(t, c, "x"+p+":a", "nope")
	in.none("channel outside the pattern")

	for i := range 20 {
		publish(t, other, p+":seq", strconv.Itoa(i))
	}
	for i := range 20 {
		if m := in.next("ordered message"); m.Payload != strconv.Itoa(i) {
			// On a cluster, an adapter must send PUBLISH to the node of the
			// channel's slot (backend.KeySlot(channel)), not to any node:
			// messages relayed by different nodes overtake each other.
			t.Fatalf("message %d of one channel, published one after another by one client, has payload %q: out of order", i, m.Payload)
		}
	}

	if err := sub.Close(); err != nil {
		t.Errorf("Subscription.Close: %v", err)
	}
	if err := sub.Close(); err != nil {
		t.Errorf("second Subscription.Close: %v, want nil", err)
	}
	publish(t, other, p+":a", "after close")
	in.none("after Subscription.Close")

	// The client still publishes and subscribes after one subscription ended.
	in2 := newInbox(t)
	subscribe(t, c, p+":*", in2.handle)
	publish(t, other, p+":a", "again")
	if m := in2.next("message to a new subscription"); m.Payload != "again" {
		t.Errorf("got %+v", m)
	}
	in.none("old subscription after a new one")
}

// testPubSubFromScript: PUBLISH made inside Lua scripts, on every node of a
// cluster, is delivered.
func testPubSubFromScript(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	in := newInbox(t)
	subscribe(t, c, p+":*", in.handle)
	keys := thirds(p)
	s.checkSpread(t, keys)
	src := "-- KEYS[1] routes the script; ARGV[1] channel; ARGV[2] payload\nreturn redis.call('PUBLISH', ARGV[1], ARGV[2])"
	var want []string
	for i, k := range keys {
		payload := "lua" + strconv.Itoa(i)
		want = append(want, payload)
		rs := do(t, c, backend.Cmd{Name: "EVAL", Pre: []string{src, "1"}, Keys: []string{k}, Args: []string{p + ":lua", payload}})
		if rs[0].Error() != nil {
			t.Fatalf("EVAL PUBLISH on %s: %v", k, rs[0])
		}
	}
	var got []string
	for range keys {
		got = append(got, in.next("message published by a script").Payload)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("messages from scripts: %q, want %q", got, want)
	}
}

// testPubSubAcrossSlots: on a cluster, messages published on channels of
// every slot third and directly on every node all reach one subscription.
func testPubSubAcrossSlots(t *testing.T, s *suite) {
	c, other := s.client(t), s.client(t)
	p := redistest.Prefix(t)
	in := newInbox(t)
	subscribe(t, c, p+":*", in.handle)
	channels := thirds(p)
	var want []string
	for _, ch := range channels {
		publish(t, other, ch, "via client "+ch)
		want = append(want, "via client "+ch)
	}
	for i := range s.target.Addrs {
		payload := "via node " + strconv.Itoa(i)
		s.srv.DoNode(t, i, "PUBLISH", p+":direct", payload)
		want = append(want, payload)
	}
	var got []string
	for range want {
		got = append(got, in.next("message across slots").Payload)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("messages: %q, want %q", got, want)
	}
}

// testPubSubIndependent: subscriptions of one client have their own
// handlers: a blocked handler does not hold back another subscription, and
// closing one leaves the other running.
func testPubSubIndependent(t *testing.T, s *suite) {
	c, other := s.client(t), s.client(t)
	p := redistest.Prefix(t)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	slow := newInbox(t)
	subA := subscribe(t, c, p+":a:*", func(m backend.Message) {
		<-release
		slow.handle(m)
	})
	fast := newInbox(t)
	subB := subscribe(t, c, p+":b:*", fast.handle)
	// Registered after the subscriptions' cleanups so it runs before them:
	// their Close waits for the blocked handler.
	t.Cleanup(unblock)

	publish(t, other, p+":a:1", "a1")
	publish(t, other, p+":b:1", "b1")
	if m := fast.next("subscription B while A's handler is blocked"); m.Payload != "b1" || m.Pattern != p+":b:*" {
		t.Errorf("B got %+v", m)
	}
	unblock()
	if m := slow.next("subscription A after unblocking"); m.Payload != "a1" || m.Pattern != p+":a:*" {
		t.Errorf("A got %+v", m)
	}

	if err := subA.Close(); err != nil {
		t.Errorf("Close A: %v", err)
	}
	publish(t, other, p+":b:2", "b2")
	publish(t, other, p+":a:2", "a2")
	if m := fast.next("subscription B after A closed"); m.Payload != "b2" {
		t.Errorf("B got %+v", m)
	}
	slow.none("subscription A after its Close")
	if err := subB.Close(); err != nil {
		t.Errorf("Close B: %v", err)
	}
}

// testSubscriptionCloseWaits: Subscription.Close returns only after the
// handler has returned for the last time.
func testSubscriptionCloseWaits(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	entered := make(chan struct{}, 1)
	var returned atomic.Bool
	sub := subscribe(t, c, p+":*", func(backend.Message) {
		select {
		case entered <- struct{}{}:
		default:
		}
		time.Sleep(quiet)
		returned.Store(true)
	})
	publish(t, c, p+":a", "x")
	select {
	case <-entered:
	case <-time.After(wait):
		t.Fatal("handler not called")
	}
	within(t, "Subscription.Close with a busy handler", func() {
		if err := sub.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if !returned.Load() {
		t.Error("Subscription.Close returned while the handler was still running")
	}
}
