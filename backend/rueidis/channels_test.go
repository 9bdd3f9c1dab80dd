package rueidis_test

// Tests of SubscribeChannels beyond the adapter conformance suite
// (backendtest, "Channels"): scale on few connections, failover of a
// sharded channel's master, a server that cannot be reached, Remove and a
// running handler, Close of the client.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	rb "github.com/realtime-message/presence/backend/rueidis"
	"github.com/realtime-message/presence/internal/redistest"
)

var quietLog = slog.New(slog.DiscardHandler)

func subscribeChannels(t *testing.T, c *rb.Client, sharded bool, h backend.Handler) backend.ChannelSubscription {
	t.Helper()
	sub, err := c.SubscribeChannels(testCtx(t), sharded, h)
	if err != nil {
		t.Fatalf("SubscribeChannels(sharded=%v): %v", sharded, err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

// waitFor polls cond every 20ms for up to 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publishUntil publishes on channel (SPUBLISH when sharded, through the
// client, which routes it to the slot's owner) every 100ms until got
// receives a message of it.
func publishUntil(t *testing.T, c *rb.Client, sharded bool, channel string, got <-chan backend.Message) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cmd := backend.Cmd{Name: "PUBLISH", Args: []string{channel, "x"}}
		if sharded {
			cmd = backend.K("SPUBLISH", channel, "x")
		}
		_, _ = c.Do(testCtx(t), cmd) // may fail while the cluster settles
		timer := time.After(100 * time.Millisecond)
		for wait := true; wait; {
			select {
			case m := <-got:
				if m.Channel == channel {
					return
				}
			case <-timer:
				wait = false
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message on %s", channel)
		}
	}
}

// TestChannelsEmbeddedSharded: the embedded server has no SSUBSCRIBE, so
// a sharded subscription fails at once, saying so; a classic one works.
func TestChannelsEmbeddedSharded(t *testing.T) {
	s := redistest.Embedded(t)
	c := newClient(t, s, rb.Options{})
	_, err := c.SubscribeChannels(testCtx(t), true, func(backend.Message) {})
	if err == nil || !strings.Contains(err.Error(), "sharded pub/sub") {
		t.Fatalf("sharded SubscribeChannels on the embedded server: %v, want an error about sharded pub/sub", err)
	}
	got := make(chan backend.Message, 10)
	sub := subscribeChannels(t, c, false, func(m backend.Message) { got <- m })
	if err := sub.Add(testCtx(t), "emb:a"); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(testCtx(t), "emb:a", "x"); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Channel != "emb:a" || m.Pattern != "" {
			t.Errorf("message %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}
}

// pubsubCounts sums, over the connections of client name on every node of
// s, how many there are and the channels (sub=) or shard channels (ssub=)
// they are subscribed to, from CLIENT LIST.
func pubsubCounts(t *testing.T, s *redistest.Server, name string, sharded bool) (conns, channels int) {
	t.Helper()
	field := "sub="
	if sharded {
		field = "ssub="
	}
	for i := range s.Addrs {
		r := s.DoNode(t, i, "CLIENT", "LIST")
		if r.Error() != nil {
			t.Fatalf("CLIENT LIST: %v", r.Err)
		}
		for _, line := range strings.Split(r.Str, "\n") {
			if !strings.Contains(line, " name="+name+" ") {
				continue
			}
			for _, f := range strings.Fields(line) {
				if n, ok := strings.CutPrefix(f, field); ok {
					k, _ := strconv.Atoi(n)
					if k > 0 {
						conns++
						channels += k
					}
				}
			}
		}
	}
	return conns, channels
}

// TestChannelsManyOnFewConnections: 10,000 channels go on one connection
// (classic) or one per master (sharded on a cluster), every one confirmed
// when Add returns, and all gone from the server when Remove returns.
func TestChannelsManyOnFewConnections(t *testing.T) {
	const n = 10000
	for _, tc := range []struct {
		s         *redistest.Server
		sharded   bool
		wantConns int
	}{
		{redistest.Standalone(t), false, 1},
		{redistest.Standalone(t), true, 1},
		{redistest.Cluster(t), false, 1},
		{redistest.Cluster(t), true, 3},
	} {
		t.Run(fmt.Sprintf("%s/sharded=%v", tc.s.Name, tc.sharded), func(t *testing.T) {
			name := fmt.Sprintf("many%d", time.Now().UnixNano())
			c := newClient(t, tc.s, rb.Options{ClientName: name})
			got := make(chan backend.Message, 100)
			sub := subscribeChannels(t, c, tc.sharded, func(m backend.Message) { got <- m })
			p := redistest.Prefix(t)
			channels := make([]string, n)
			for i := range channels {
				channels[i] = p + ":" + strconv.Itoa(i)
			}
			start := time.Now()
			if err := sub.Add(testCtx(t), channels...); err != nil {
				t.Fatal(err)
			}
			t.Logf("Add of %d channels: %v", n, time.Since(start))
			if k := sub.Channels(); k != n {
				t.Errorf("Channels() = %d, want %d", k, n)
			}
			conns, subs := pubsubCounts(t, tc.s, name, tc.sharded)
			if conns != tc.wantConns || subs != n {
				t.Errorf("the server counts %d channels on %d connections, want %d on %d", subs, conns, n, tc.wantConns)
			}
			for _, ch := range []string{channels[0], channels[n/2], channels[n-1]} {
				publishUntil(t, c, tc.sharded, ch, got)
			}
			start = time.Now()
			if err := sub.Remove(testCtx(t), channels...); err != nil {
				t.Fatal(err)
			}
			t.Logf("Remove of %d channels: %v", n, time.Since(start))
			if _, subs := pubsubCounts(t, tc.s, name, tc.sharded); subs != 0 {
				t.Errorf("the server still counts %d channels after Remove returned", subs)
			}
		})
	}
}

// TestChannelsRemoveWaitsForHandler: Remove returns only after a running
// call of the removed channel's handler returned, and no call starts for
// it afterwards.
func TestChannelsRemoveWaitsForHandler(t *testing.T) {
	s := redistest.Embedded(t)
	c := newClient(t, s, rb.Options{})
	entered, release := make(chan struct{}, 10), make(chan struct{})
	var calls, running atomic.Int64
	sub := subscribeChannels(t, c, false, func(m backend.Message) {
		calls.Add(1)
		running.Add(1)
		defer running.Add(-1)
		entered <- struct{}{}
		<-release
	})
	if err := sub.Add(testCtx(t), "rw:a"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := c.Publish(testCtx(t), "rw:a", "x"); err != nil {
			t.Fatal(err)
		}
	}
	<-entered
	removed := make(chan error, 1)
	go func() { removed <- sub.Remove(testCtx(t), "rw:a") }()
	select {
	case err := <-removed:
		t.Fatalf("Remove returned (%v) while the channel's handler was running", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if r := running.Load(); r != 0 {
		t.Errorf("%d handler calls running after Remove returned", r)
	}
	n := calls.Load()
	time.Sleep(200 * time.Millisecond)
	if calls.Load() != n || n != 1 {
		t.Errorf("%d handler calls, want 1: the queued messages of a removed channel must be dropped", calls.Load())
	}
}

// TestChannelsServerDown: while the subscription cannot reconnect, Alive
// says why, Add honours its deadline and reports the failure; once the
// server takes connections again every channel (the one whose Add timed
// out too) is subscribed again, counted once in Resubscribed.
func TestChannelsServerDown(t *testing.T) {
	checkLeaks(t)
	s := redistest.NewStandalone(t)
	c := newClient(t, s, rb.Options{Logger: quietLog})
	got := make(chan backend.Message, 100)
	sub := subscribeChannels(t, c, true, func(m backend.Message) { got <- m })
	if err := sub.Add(testCtx(t), "down:a"); err != nil {
		t.Fatal(err)
	}
	do(t, c, backend.Cmd{Name: "CONFIG", Args: []string{"SET", "requirepass", "x"}})
	if rs := do(t, c, backend.Cmd{Name: "CLIENT", Args: []string{"KILL", "TYPE", "pubsub"}}); rs[0].Int != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub: %v, want 1 connection", rs[0])
	}
	st := sub.(backend.SubscriptionState)
	waitFor(t, "Alive to report the lost connection", func() bool { return st.Alive() != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := sub.Add(ctx, "down:b")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("Add while the server refuses connections: %v, want the deadline and the server's refusal", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Add with a 500ms deadline returned after %v", d)
	}
	if r := sub.(backend.Resubscriber).Resubscribed(); r != 0 {
		t.Errorf("Resubscribed() = %d while still down", r)
	}
	do(t, c, backend.Cmd{Name: "CONFIG", Args: []string{"SET", "requirepass", ""}})
	waitFor(t, "Alive after the server took connections again", func() bool { return st.Alive() == nil })
	if r := sub.(backend.Resubscriber).Resubscribed(); r != 1 {
		t.Errorf("Resubscribed() = %d after one reconnect, want 1", r)
	}
	for _, ch := range []string{"down:a", "down:b"} {
		publishUntil(t, c, true, ch, got)
	}
}

// TestChannelsClientClose: Close of the client ends its channel
// subscriptions (no goroutine left) and they refuse Add afterwards.
func TestChannelsClientClose(t *testing.T) {
	checkLeaks(t)
	s := redistest.NewStandalone(t)
	c := newClient(t, s, rb.Options{})
	sub := subscribeChannels(t, c, false, func(backend.Message) {})
	if err := sub.Add(testCtx(t), "cc:a"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := sub.Add(testCtx(t), "cc:b"); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("Add after the client closed: %v, want ErrClosed", err)
	}
	if err := sub.Remove(testCtx(t), "cc:a"); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("Remove after the client closed: %v, want ErrClosed", err)
	}
	if _, err := c.SubscribeChannels(testCtx(t), false, func(backend.Message) {}); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("SubscribeChannels after Close: %v, want ErrClosed", err)
	}
}

// TestChannelsFailover: a sharded channel follows its shard through a
// coordinated failover (the demoted master drops its shard channels) and
// through a crash of the new master (the connection is lost; the replica
// promoted in its place, unknown to rueidis until then, takes the channel).
func TestChannelsFailover(t *testing.T) {
	r := redistest.NewReplicated(t, 0)
	c := newClient(t, r.Server, rb.Options{Logger: quietLog})
	got := make(chan backend.Message, 100)
	sub := subscribeChannels(t, c, true, func(m backend.Message) { got <- m })
	p := redistest.Prefix(t)
	// One channel on shard 0, which fails over, one on shard 1, which
	// does not.
	var moving, staying string
	for i := 0; moving == "" || staying == ""; i++ {
		ch := p + ":" + strconv.Itoa(i)
		switch r.ShardOf(ch) {
		case 0:
			moving = ch
		case 1:
			staying = ch
		}
	}
	if err := sub.Add(testCtx(t), moving, staying); err != nil {
		t.Fatal(err)
	}
	resubs := sub.(backend.Resubscriber)

	promoted := r.Failover(t, 0)
	waitFor(t, "Resubscribed after the failover", func() bool { return resubs.Resubscribed() >= 1 })
	publishUntil(t, c, true, moving, got)
	publishUntil(t, c, true, staying, got)
	waitFor(t, "the new master to count the subscription", func() bool {
		n := doNodeAddr(t, r, promoted, "PUBSUB", "SHARDNUMSUB", moving)
		return len(n.Elems) == 2 && n.Elems[1].Int == 1
	})

	before := resubs.Resubscribed()
	_, promoted = r.KillMaster(t, 0)
	waitFor(t, "Resubscribed after the master was killed", func() bool { return resubs.Resubscribed() > before })
	publishUntil(t, c, true, moving, got)
	publishUntil(t, c, true, staying, got)
	n := doNodeAddr(t, r, promoted, "PUBSUB", "SHARDNUMSUB", moving)
	if len(n.Elems) != 2 || n.Elems[1].Int != 1 {
		t.Errorf("PUBSUB SHARDNUMSUB on the promoted master: %v, want 1", n)
	}
}

func doNodeAddr(t *testing.T, r *redistest.Replicated, node int, args ...string) backend.Reply {
	t.Helper()
	for i, a := range r.Addrs {
		if a == r.NodeAddr(node) {
			return r.DoNode(t, i, args...)
		}
	}
	t.Fatalf("node %d is not in Addrs", node)
	return backend.Reply{}
}

// TestChannelsRESP2: with RESP2 rueidis runs pub/sub on a connection of
// its own beside the dedicated one; subscribe, unsubscribe and reconnect
// work there too.
func TestChannelsRESP2(t *testing.T) {
	for _, s := range []*redistest.Server{redistest.Standalone(t), redistest.Cluster(t)} {
		for _, sharded := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/sharded=%v", s.Name, sharded), func(t *testing.T) {
				name := fmt.Sprintf("resp2%d", time.Now().UnixNano())
				c := newClient(t, s, rb.Options{AlwaysRESP2: true, ClientName: name, Logger: quietLog})
				got := make(chan backend.Message, 100)
				sub := subscribeChannels(t, c, sharded, func(m backend.Message) { got <- m })
				p := redistest.Prefix(t)
				channels := []string{p + ":a", p + ":b", p + ":c", p + ":d"}
				if err := sub.Add(testCtx(t), channels...); err != nil {
					t.Fatal(err)
				}
				if _, n := pubsubCounts(t, s, name, sharded); n != len(channels) {
					t.Errorf("the server counts %d channels, want %d", n, len(channels))
				}
				for _, ch := range channels {
					publishUntil(t, c, sharded, ch, got)
				}
				if err := sub.Remove(testCtx(t), channels[0]); err != nil {
					t.Fatal(err)
				}
				if _, n := pubsubCounts(t, s, name, sharded); n != len(channels)-1 {
					t.Errorf("the server counts %d channels after Remove of one, want %d", n, len(channels)-1)
				}
				for i := range s.Addrs {
					s.DoNode(t, i, "CLIENT", "KILL", "TYPE", "pubsub")
				}
				r := sub.(backend.Resubscriber)
				waitFor(t, "Resubscribed", func() bool { return r.Resubscribed() > 0 })
				for _, ch := range channels[1:] {
					publishUntil(t, c, sharded, ch, got)
				}
			})
		}
	}
}

// TestChannelsChurnIsNotALoss: the unsubscribe confirmations of Removes
// racing Adds of the same channels are not taken for the server dropping
// a channel (which would resubscribe and count in Resubscribed), and the
// channels added last stay subscribed.
func TestChannelsChurnIsNotALoss(t *testing.T) {
	for _, s := range []*redistest.Server{redistest.Standalone(t), redistest.Cluster(t)} {
		for _, sharded := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/sharded=%v", s.Name, sharded), func(t *testing.T) {
				name := fmt.Sprintf("churn%d", time.Now().UnixNano())
				c := newClient(t, s, rb.Options{ClientName: name})
				sub := subscribeChannels(t, c, sharded, func(backend.Message) {})
				p := redistest.Prefix(t)
				channels := []string{p + ":a", p + ":b", p + ":c"}
				errs := make(chan error, 8)
				for g := range 8 {
					go func() {
						var err error
						for i := 0; i < 40 && err == nil; i++ {
							ch := channels[(g+i)%len(channels)]
							if err = sub.Add(testCtx(t), ch); err == nil {
								err = sub.Remove(testCtx(t), ch)
							}
						}
						errs <- err
					}()
				}
				for range 8 {
					if err := <-errs; err != nil {
						t.Fatal(err)
					}
				}
				if err := sub.Add(testCtx(t), channels...); err != nil {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond) // a mistaken resubscription would show by now
				if r := sub.(backend.Resubscriber).Resubscribed(); r != 0 {
					t.Errorf("Resubscribed() = %d after Add/Remove churn, want 0", r)
				}
				if err := sub.(backend.SubscriptionState).Alive(); err != nil {
					t.Errorf("Alive() = %v", err)
				}
				if _, n := pubsubCounts(t, s, name, sharded); n != len(channels) {
					t.Errorf("the server counts %d channels, want %d", n, len(channels))
				}
			})
		}
	}
}

// TestChannelsResubscribeRefused: a channel lost with its connection and
// refused by the server when subscribed again (an ACL took SUBSCRIBE away,
// as a password would) is not given up on: the subscription stays down,
// saying why, without counting a recovery, and keeps retrying until the
// server accepts the channel again; then it is subscribed, counted once.
// Nobody calls Add for such a channel, so giving up would leave it
// unsubscribed for good while Alive reported the subscription healthy.
func TestChannelsResubscribeRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		server  func(testing.TB) *redistest.Server // private: its ACL changes
		sharded bool
	}{
		{"standalone/classic", redistest.NewStandalone, false},
		{"standalone/sharded", redistest.NewStandalone, true},
		{"cluster/sharded", redistest.NewCluster, true}, // a connection per master
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			s := tc.server(t)
			c := newClient(t, s, rb.Options{Logger: quietLog})
			got := make(chan backend.Message, 100)
			sub := subscribeChannels(t, c, tc.sharded, func(m backend.Message) { got <- m })
			if err := sub.Add(testCtx(t), "acl:a"); err != nil {
				t.Fatal(err)
			}
			cmd := "subscribe"
			if tc.sharded {
				cmd = "ssubscribe"
			}
			eachNode(t, s, "ACL", "SETUSER", "default", "-"+cmd)
			if n := eachNode(t, s, "CLIENT", "KILL", "TYPE", "pubsub"); n != 1 {
				t.Fatalf("CLIENT KILL TYPE pubsub killed %d connections, want 1", n)
			}
			// The second refusal is a retry: the round of the first one is
			// over, and whatever it concluded is in Alive.
			st := sub.(backend.SubscriptionState)
			for deadline := time.Now().Add(20 * time.Second); aclDenials(t, s, cmd) < 2; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the refused resubscription was not retried: %d refusals; Alive() = %v, Resubscribed() = %d",
						aclDenials(t, s, cmd), st.Alive(), sub.(backend.Resubscriber).Resubscribed())
				}
			}
			if err := st.Alive(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
				t.Errorf("Alive() = %v while the server refuses %s, want the refusal", err, cmd)
			}
			if r := sub.(backend.Resubscriber).Resubscribed(); r != 0 {
				t.Errorf("Resubscribed() = %d while the channel is refused, want 0", r)
			}
			if n := sub.Channels(); n != 1 {
				t.Errorf("Channels() = %d, want 1", n)
			}
			eachNode(t, s, "ACL", "SETUSER", "default", "+"+cmd)
			waitFor(t, "Alive once the server accepts "+cmd, func() bool { return st.Alive() == nil })
			if r := sub.(backend.Resubscriber).Resubscribed(); r != 1 {
				t.Errorf("Resubscribed() = %d after one loss, want 1", r)
			}
			publishUntil(t, c, tc.sharded, "acl:a", got)
		})
	}
}

// eachNode sends a command to every node of s and sums their integer
// replies.
func eachNode(t *testing.T, s *redistest.Server, args ...string) int64 {
	t.Helper()
	var n int64
	for i := range s.Addrs {
		r := s.DoNode(t, i, args...)
		if r.Error() != nil {
			t.Fatalf("%v on %s: %v", args, s.Addrs[i], r.Err)
		}
		n += r.Int
	}
	return n
}

// aclDenials counts, over the nodes of s, the commands named cmd refused
// for want of permission (ACL LOG, which aggregates repeats in an entry's
// count).
func aclDenials(t *testing.T, s *redistest.Server, cmd string) int64 {
	t.Helper()
	var n int64
	for i := range s.Addrs {
		r := s.DoNode(t, i, "ACL", "LOG")
		if r.Error() != nil {
			t.Fatalf("ACL LOG: %v", r.Err)
		}
		for _, entry := range r.Elems {
			var object string
			var count int64
			for j := 0; j+1 < len(entry.Elems); j += 2 {
				switch entry.Elems[j].Str {
				case "object":
					object = entry.Elems[j+1].Str
				case "count":
					count = entry.Elems[j+1].Int
				}
			}
			if object == cmd {
				n += count
			}
		}
	}
	return n
}
