package socketio_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/socketio"
)

// eventuallyT polls cond for up to 10s.
func eventuallyT(t *testing.T, cond func() bool, format string, args ...any) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf(format, args...)
		}
	}
}

// With per-room subscriptions a node receives the events of the rooms its
// sockets are in, not the others', and drops a room after its last local
// socket left.
func TestNodeReceivesOnlyItsRooms(t *testing.T) {
	srv := redistest.Standalone(t)
	prefix := redistest.Prefix(t)
	na := startNode(t, srv, nodeConfig{Prefix: prefix, PubSub: presence.PubSubChannels})
	nb := startNode(t, srv, nodeConfig{Prefix: prefix, PubSub: presence.PubSubChannels})
	ra, rb := "a-"+prefix, "b-"+prefix
	a, b := dial(t, na.url), dial(t, nb.url)
	a.ok("presence:join", map[string]any{"roomId": ra, "userId": "alice"})
	b.ok("presence:join", map[string]any{"roomId": rb, "userId": "bob"})
	b.ok("presence:heartbeat", map[string]any{"patchState": map[string]any{"x": 1}})
	b.waitEvent("presence:event", presenceEvent("update", b.id()))
	a.waitEvent("presence:event", presenceEvent("join", a.id()))
	time.Sleep(100 * time.Millisecond) // a stray event would be in by now
	sa, sb := na.binding.FeedStats(), nb.binding.FeedStats()
	if sa.Presence != 1 || sb.Presence != 2 || sa.SubscribedRooms != 1 || sb.SubscribedRooms != 1 {
		t.Fatalf("node a %+v, node b %+v: want 1 and 2 presence events, one room each", sa, sb)
	}
	b.ok("presence:leave")
	eventuallyT(t, func() bool { return nb.binding.FeedStats().SubscribedRooms == 0 }, "node b still subscribed: %+v", nb.binding.FeedStats())
	// The room is not followed any more: its events stop reaching b.
	before := nb.binding.FeedStats().Presence
	a.ok("presence:leave")
	a.ok("presence:join", map[string]any{"roomId": rb, "userId": "alice"})
	a.waitEvent("presence:event", presenceEvent("join", a.id()))
	time.Sleep(100 * time.Millisecond)
	if got := nb.binding.FeedStats().Presence; got != before {
		t.Fatalf("node b received %d presence events after it left, want none", got-before)
	}
}

// A socket follows its room before its join runs: the first socket of a
// node in a room gets its own join event, every time.
func TestFollowBeforeJoin(t *testing.T) {
	srv := redistest.Standalone(t)
	prefix := redistest.Prefix(t)
	n := startNode(t, srv, nodeConfig{Prefix: prefix, PubSub: presence.PubSubChannels,
		Options: socketio.Options{PresenceRate: socketio.Rate{PerSecond: 1000, Burst: 1000}}})
	c := dial(t, n.url)
	for i := range 20 {
		c.ok("presence:join", map[string]any{"roomId": fmt.Sprint("r", i, "-", prefix), "userId": "u"})
		c.waitEventFor(5*time.Second, "presence:event", presenceEvent("join", c.id()))
		c.ok("presence:leave")
	}
}

// Rejoins, disconnects and shutdown give every room's follow back.
func TestFollowsReleased(t *testing.T) {
	srv := redistest.Standalone(t)
	prefix := redistest.Prefix(t)
	n := startNode(t, srv, nodeConfig{Prefix: prefix, PubSub: presence.PubSubChannels})
	room := "r-" + prefix
	a, b := dial(t, n.url), dial(t, n.url)
	a.ok("presence:join", map[string]any{"roomId": room, "userId": "a"})
	a.ok("presence:join", map[string]any{"roomId": room, "userId": "a"}) // the same room again: no second follow
	b.ok("presence:join", map[string]any{"roomId": room, "userId": "b"})
	b.fail("PRESENCE_CONFLICT", "presence:join", map[string]any{"roomId": "other-" + prefix, "userId": "b"})
	b.ok("presence:watchUser", map[string]any{"userId": "a"})
	a.ok("presence:watchUser", map[string]any{"userId": "a"})
	a.ok("presence:watchUser", map[string]any{"userId": "a"})
	if st := n.binding.FeedStats(); st.Rooms != 1 || st.Users != 1 {
		t.Fatalf("stats %+v: want one room and one user followed", st)
	}
	a.ok("presence:leave")
	b.close()
	eventuallyT(t, func() bool { return n.binding.FeedStats().Rooms == 0 }, "the room's sockets left: %+v", n.binding.FeedStats())
	if st := n.binding.FeedStats(); st.Users != 1 {
		t.Fatalf("stats %+v: a still watches a", st)
	}
	a.ok("presence:unwatchUser", map[string]any{"userId": "a"})
	a.ok("presence:join", map[string]any{"roomId": room, "userId": "a"})
	eventuallyT(t, func() bool { st := n.binding.FeedStats(); return st.Rooms == 1 && st.Users == 0 }, "stats %+v", n.binding.FeedStats())
	n.stop()
	if st := n.binding.FeedStats(); st.Rooms != 0 || st.SubscribedRooms != 0 {
		t.Fatalf("after shutdown: %+v", st)
	}
}

// "PUBSUB NUMPAT is 0 on a running server with sockets in rooms" (issue
// 16): a bound node in channels or sharded mode subscribes no pattern.
// It needs an adapter that subscribes to channels itself (the test double
// uses patterns).
func TestNoPatternSubscriptions(t *testing.T) {
	for _, tc := range []struct {
		mode string
		srv  func(testing.TB) *redistest.Server
	}{
		// Servers of their own: NUMPAT counts every client's patterns.
		{presence.PubSubChannels, redistest.NewStandalone},
		{presence.PubSubSharded, redistest.NewCluster},
	} {
		for _, be := range []string{"rueidis", "goredis"} {
			t.Run(tc.mode+"/"+be, func(t *testing.T) {
				if !subscribesChannels(t, be) {
					t.Skipf("%s does not implement backend.ChannelSubscriber", be)
				}
				srv := tc.srv(t)
				prefix := redistest.Prefix(t)
				n := startNode(t, srv, nodeConfig{Backend: be, Prefix: prefix, PubSub: tc.mode})
				for i := range 3 {
					c := dial(t, n.url)
					c.ok("presence:join", map[string]any{"roomId": fmt.Sprint("r", i, "-", prefix), "userId": "u"})
					c.ok("presence:watchUser", map[string]any{"userId": "u"})
				}
				if st := n.binding.FeedStats(); st.SubscribedRooms != 3 || st.SubscribedUsers != 1 {
					t.Fatalf("stats %+v", st)
				}
				mr := n.svc.Client().(backend.MasterRunner)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				masters := 0
				err := mr.EachMaster(ctx, []backend.Cmd{backend.C("PUBSUB", nil, "NUMPAT")}, func(addr string, r []backend.Reply, err error) {
					masters++
					if err == nil {
						err = r[0].Error()
					}
					if err != nil {
						t.Errorf("%s: %v", addr, err)
						return
					}
					if np, _ := r[0].AsInt(); np != 0 {
						t.Errorf("%s: PUBSUB NUMPAT %d, want 0", addr, np)
					}
				})
				if err != nil || masters == 0 {
					t.Fatalf("EachMaster: %v (%d masters)", err, masters)
				}
			})
		}
	}
}

// subscribesChannels reports whether adapter be implements
// backend.ChannelSubscriber itself.
func subscribesChannels(t *testing.T, be string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := presence.NewClient(ctx, presence.Config{Backend: be, Addrs: redistest.Standalone(t).Addrs})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, ok := c.(backend.ChannelSubscriber)
	return ok
}
