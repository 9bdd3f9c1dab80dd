package backend_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/realtime-message/presence/backend"
)

// fakeNodes is a topology whose masters a test changes, and the node
// subscriptions FollowMasters opened on it.
type fakeNodes struct {
	mu      sync.Mutex
	masters []string
	refuse  map[string]bool // Subscribe on these fails
	open    map[string]*fakeNodeSub
	opened  int
}

type fakeNodeSub struct {
	n      *fakeNodes
	addr   string
	closed bool
}

func (s *fakeNodeSub) Close() error {
	s.n.mu.Lock()
	defer s.n.mu.Unlock()
	if !s.closed {
		s.closed = true
		delete(s.n.open, s.addr)
	}
	return nil
}

func (n *fakeNodes) list(context.Context) ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.masters == nil {
		return nil, errors.New("no node answers")
	}
	return append([]string(nil), n.masters...), nil
}

func (n *fakeNodes) subscribe(_ context.Context, addr string) (backend.Subscription, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.refuse[addr] {
		return nil, errors.New("connection refused")
	}
	s := &fakeNodeSub{n: n, addr: addr}
	n.open[addr] = s
	n.opened++
	return s, nil
}

func (n *fakeNodes) set(masters ...string) {
	n.mu.Lock()
	n.masters = masters
	n.mu.Unlock()
}

func (n *fakeNodes) subscribed() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for a := range n.open {
		out = append(out, a)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// FollowMasters subscribes on every master, then on a master promoted
// later, drops a former master's subscription, reports a master it could
// not subscribe on and counts late masters as missed events; Close
// closes everything and ends its goroutine.
func TestFollowMastersFollowsTheTopology(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	n := &fakeNodes{masters: []string{"a", "b"}, refuse: map[string]bool{}, open: map[string]*fakeNodeSub{}}
	sub, err := backend.FollowMasters(context.Background(), backend.Masters{
		List: n.list, Subscribe: n.subscribe, Refresh: 5 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.subscribed(); got != "a,b" {
		t.Fatalf("subscribed on %q, want a,b", got)
	}
	st := sub.(backend.SubscriptionState)
	rs := sub.(backend.Resubscriber)
	if err := st.Alive(); err != nil || rs.Resubscribed() != 0 {
		t.Fatalf("fresh: alive %v, resubscribed %d", err, rs.Resubscribed())
	}

	n.set("b", "c") // a failed over to c
	waitFor(t, "the subscription to follow a → c", func() bool { return n.subscribed() == "b,c" })
	if rs.Resubscribed() == 0 {
		t.Fatal("a master subscribed late is not counted: its earlier events were missed")
	}

	n.mu.Lock()
	n.refuse["d"] = true
	n.mu.Unlock()
	n.set("b", "c", "d")
	waitFor(t, "Alive to report d", func() bool { err := st.Alive(); return err != nil && strings.Contains(err.Error(), "d") })

	n.set() // no node answers: subscriptions are kept
	waitFor(t, "Alive to report the listing", func() bool {
		err := st.Alive()
		return err != nil && strings.Contains(err.Error(), "listing")
	})
	if got := n.subscribed(); got != "b,c" {
		t.Fatalf("a failed listing dropped subscriptions: %q", got)
	}

	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if got := n.subscribed(); got != "" {
		t.Fatalf("after Close still subscribed on %q", got)
	}
	if st.Alive() == nil {
		t.Fatal("Alive after Close")
	}
}

// A master that refuses the first subscription fails the call, and what
// was already subscribed is closed.
func TestFollowMastersFailsWhole(t *testing.T) {
	n := &fakeNodes{masters: []string{"a", "b"}, refuse: map[string]bool{"b": true}, open: map[string]*fakeNodeSub{}}
	_, err := backend.FollowMasters(context.Background(), backend.Masters{List: n.list, Subscribe: n.subscribe})
	if err == nil || !strings.Contains(err.Error(), "b") {
		t.Fatalf("err %v, want b named", err)
	}
	if got := n.subscribed(); got != "" {
		t.Fatalf("left subscribed on %q", got)
	}
}
