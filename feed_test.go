package presence_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/chandouble"
	"github.com/realtime-message/presence/internal/redistest"
)

// subscribers counts the subscriptions of channel: the double's own count
// for a chanDouble, else PUBSUB NUMSUB (standalone servers).
func subscribers(t testing.TB, c backend.Client, channel string) int {
	t.Helper()
	if n, ok := chandouble.Subscribed(c, channel); ok {
		return n
	}
	r, err := c.Do(ctxT(t), backend.C("PUBSUB", nil, "NUMSUB", channel))
	if err == nil {
		err = r[0].Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	a, err := r[0].AsArray()
	if err != nil || len(a) != 2 {
		t.Fatalf("PUBSUB NUMSUB reply %v", r[0])
	}
	n, _ := a[1].AsInt()
	return int(n)
}

// forEachStandalone runs fn for both adapters on the shared standalone
// server, in channels mode.
func forEachStandalone(t *testing.T, fn func(t *testing.T, connect func(testing.TB) backend.Client)) {
	srv := redistest.Standalone(t)
	for _, b := range []string{"rueidis", "goredis"} {
		t.Run(b, func(t *testing.T) {
			fn(t, func(t testing.TB) backend.Client { return chandouble.Wrap(connectBackend(t, b, srv)) })
		})
	}
}

// Many goroutines follow and unfollow one room at once, in every order
// (0→1→0→1 included, with and without a linger): whenever follows are
// held the room is subscribed exactly once and its events arrive once;
// when none is, it ends unsubscribed and forgotten.
func TestFeedFollowRace(t *testing.T) {
	forEachStandalone(t, func(t *testing.T, connect func(testing.TB) backend.Client) {
		for _, linger := range []time.Duration{-1, 3 * time.Millisecond} {
			t.Run(fmt.Sprint("linger=", linger), func(t *testing.T) {
				c := connect(t)
				s := newService(t, c, presence.Config{PubSub: presence.PubSubChannels})
				var got atomic.Int64
				var probes sync.Map // payload → chan struct{}, closed when it arrived
				f, err := s.NewFeed(ctxT(t), presence.FeedHandlers{
					Presence: func(ev presence.RawEvent) {
						if ch, ok := probes.Load(string(ev.Payload)); ok {
							close(ch.(chan struct{}))
							return
						}
						got.Add(1)
					},
					Metadata: func(presence.RawEvent) {},
					Linger:   linger,
				})
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				const room = "race"
				k := s.Keys()
				subs := func() (int, int) {
					return subscribers(t, c, k.RoomEvents(room)), subscribers(t, c, k.RoomMetaEvents(room))
				}
				for round := range 3 {
					var wg sync.WaitGroup
					// Few workers leave the room without follows often,
					// many rarely.
					workers, iters := 2, 400
					if round > 0 {
						workers, iters = 12, 25
					}
					for w := range workers {
						wg.Add(1)
						go func() {
							defer wg.Done()
							rng := rand.New(rand.NewPCG(uint64(round), uint64(w)))
							for range iters {
								if err := f.FollowRoom(ctxT(t), room); err != nil {
									t.Error(err)
									return
								}
								// Followed: subscribed, once, whatever the
								// others do meanwhile, so what is published
								// now arrives.
								if w%2 == 0 {
									if e, m := subs(); e != 1 || m != 1 {
										t.Errorf("round %d: follow held: %d and %d subscriptions, want 1 and 1", round, e, m)
									}
									probe := fmt.Sprintf(`{"probe":"%d-%d-%d"}`, round, w, rng.Uint64())
									arrived := make(chan struct{})
									probes.Store(probe, arrived)
									if err := c.Publish(ctxT(t), k.RoomEvents(room), probe); err != nil {
										t.Error(err)
									}
									select {
									case <-arrived:
									case <-time.After(5 * time.Second):
										t.Errorf("round %d: an event published while followed was lost", round)
									}
									if t.Failed() {
										f.UnfollowRoom(room)
										return
									}
								}
								if rng.IntN(3) == 0 {
									time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
								}
								f.UnfollowRoom(room)
							}
							if w == round {
								_ = f.FollowRoom(ctxT(t), room) // held past the churn
							}
						}()
					}
					wg.Wait()
					if t.Failed() {
						return
					}
					// One follow is held: subscribed now, and still after
					// any removal the churn scheduled has run.
					for range 2 {
						if e, m := subs(); e != 1 || m != 1 {
							t.Fatalf("round %d: one follow held: %d subscriptions of the events channel, %d of the meta one; want 1 and 1", round, e, m)
						}
						if st := f.Stats(); st.Rooms != 1 || st.SubscribedRooms != 1 {
							t.Fatalf("round %d: stats %+v", round, st)
						}
						time.Sleep(50 * time.Millisecond)
					}
					before := got.Load()
					if _, err := s.Join(ctxT(t), room, fmt.Sprint("c", round), "u", nil); err != nil {
						t.Fatal(err)
					}
					eventually(t, func() bool { return got.Load() > before }, "the join event never arrived")
					time.Sleep(50 * time.Millisecond)
					if n := got.Load() - before; n != 1 {
						t.Fatalf("round %d: the join event arrived %d times", round, n)
					}
					f.UnfollowRoom(room)
					eventually(t, func() bool {
						e, m := subs()
						st := f.Stats()
						return e == 0 && m == 0 && st.Rooms == 0 && st.SubscribedRooms == 0
					}, "the room stays subscribed: %v", f.Stats())
				}
				f.UnfollowRoom(room) // one too many: ignored
				if err := f.FollowRoom(ctxT(t), room); err != nil {
					t.Fatal(err)
				}
				if e, _ := subs(); e != 1 {
					t.Fatalf("followed after an extra unfollow: %d subscriptions", e)
				}
			})
		}
	})
}

// A node gets the events of the rooms (and users) it follows and no
// others: two services, each following its own room.
func TestFeedOnlyFollowedRooms(t *testing.T) {
	forEachStandalone(t, func(t *testing.T, connect func(testing.TB) backend.Client) {
		prefix := redistest.Prefix(t)
		cfg := presence.Config{PubSub: presence.PubSubChannels, KeyPrefix: prefix}
		type node struct {
			svc  *presence.Service
			feed *presence.Feed
			mu   sync.Mutex
			got  []string
		}
		nodes := make([]*node, 2)
		for i := range nodes {
			n := &node{svc: newService(t, connect(t), cfg)}
			rec := func(kind string) func(presence.RawEvent) {
				return func(ev presence.RawEvent) {
					n.mu.Lock()
					n.got = append(n.got, kind+":"+ev.Target)
					n.mu.Unlock()
				}
			}
			f, err := n.svc.NewFeed(ctxT(t), presence.FeedHandlers{Presence: rec("p"), Metadata: rec("m"), User: rec("u"), Linger: -1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			n.feed = f
			nodes[i] = n
		}
		a, b := nodes[0], nodes[1]
		if err := a.feed.FollowRoom(ctxT(t), "room-a"); err != nil {
			t.Fatal(err)
		}
		if err := b.feed.FollowRoom(ctxT(t), "room-b"); err != nil {
			t.Fatal(err)
		}
		if err := a.feed.FollowUser(ctxT(t), "user-a"); err != nil {
			t.Fatal(err)
		}
		// Events of both rooms and both users, from both nodes.
		for i, n := range nodes {
			for _, room := range []string{"room-a", "room-b"} {
				user := "user-" + room[len(room)-1:]
				if _, err := n.svc.Join(ctxT(t), room, fmt.Sprint("conn", i), user, nil); err != nil {
					t.Fatal(err)
				}
				if _, err := n.svc.SetMetadata(ctxT(t), presence.Channel{Type: "doc", Name: room}, []presence.Item{{Key: "k", Value: "1"}}, presence.MetadataOptions{}); err != nil {
					t.Fatal(err)
				}
			}
		}
		want := map[*node][]string{
			a: {"p:room-a", "p:room-a", "m:room-a", "m:room-a", "u:user-a"},
			b: {"p:room-b", "p:room-b", "m:room-b", "m:room-b"},
		}
		for n, w := range want {
			eventually(t, func() bool {
				n.mu.Lock()
				defer n.mu.Unlock()
				return len(n.got) >= len(w)
			}, "followed events missing: %v", n.got)
		}
		time.Sleep(100 * time.Millisecond) // anything else would be in by now
		for n, w := range want {
			n.mu.Lock()
			got := map[string]int{}
			for _, g := range n.got {
				got[g]++
			}
			wantN := map[string]int{}
			for _, g := range w {
				wantN[g]++
			}
			n.mu.Unlock()
			if fmt.Sprint(got) != fmt.Sprint(wantN) {
				t.Errorf("node %d got %v, want %v", map[*node]int{a: 0, b: 1}[n], got, wantN)
			}
		}
		if st := a.feed.Stats(); st.Presence != 2 || st.Metadata != 2 || st.User != 1 || st.Rooms != 1 || st.Users != 1 {
			t.Errorf("node a stats %+v", st)
		}
	})
}

// Follows validate their ids, honour their context and fail once the feed
// or the service is closed; Close leaves no subscription behind.
func TestFeedErrors(t *testing.T) {
	forEachStandalone(t, func(t *testing.T, connect func(testing.TB) backend.Client) {
		c := connect(t)
		s := newService(t, c, presence.Config{PubSub: presence.PubSubChannels})
		if _, err := s.NewFeed(ctxT(t), presence.FeedHandlers{}); !errors.Is(err, presence.ErrInvalidArgument) {
			t.Fatalf("NewFeed without handlers: %v", err)
		}
		f, err := s.NewFeed(ctxT(t), presence.FeedHandlers{Presence: func(presence.RawEvent) {}})
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"", "a{b", string(make([]byte, 10000))} {
			if err := f.FollowRoom(ctxT(t), bad); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Errorf("FollowRoom(%.10q): %v", bad, err)
			}
		}
		if err := f.FollowUser(ctxT(t), "u"); !errors.Is(err, presence.ErrInvalidArgument) {
			t.Errorf("FollowUser without a User handler: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := f.FollowRoom(ctx, "r"); !errors.Is(err, context.Canceled) {
			t.Errorf("FollowRoom with a canceled ctx: %v", err)
		}
		if st := f.Stats(); st.Rooms != 0 {
			t.Errorf("a failed follow is counted: %+v", st)
		}
		if err := f.FollowRoom(ctxT(t), "r"); err != nil {
			t.Fatal(err)
		}
		if n := subscribers(t, c, s.Keys().RoomEvents("r")); n != 1 {
			t.Fatalf("%d subscriptions, want 1", n)
		}
		f.Close()
		if n := subscribers(t, c, s.Keys().RoomEvents("r")); n != 0 {
			t.Fatalf("%d subscriptions after Close, want 0", n)
		}
		if err := f.FollowRoom(ctxT(t), "r"); !errors.Is(err, presence.ErrClosed) {
			t.Fatalf("FollowRoom after Close: %v", err)
		}
		f.UnfollowRoom("r")
		f.Close()

		// Service.Close ends a feed too.
		f2, err := s.NewFeed(ctxT(t), presence.FeedHandlers{Presence: func(presence.RawEvent) {}})
		if err != nil {
			t.Fatal(err)
		}
		if err := f2.FollowRoom(ctxT(t), "r2"); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if n := subscribers(t, c, s.Keys().RoomEvents("r2")); n != 0 {
			t.Fatalf("%d subscriptions after Service.Close, want 0", n)
		}
		if err := f2.FollowRoom(ctxT(t), "r2"); !errors.Is(err, presence.ErrClosed) {
			t.Fatalf("FollowRoom after Service.Close: %v", err)
		}
		f2.Close()
	})
}

// In pattern mode following is bookkeeping: the three patterns deliver
// every room's events.
func TestFeedPatternMode(t *testing.T) {
	forEachStandalone(t, func(t *testing.T, connect func(testing.TB) backend.Client) {
		s := newService(t, connect(t), presence.Config{PubSub: presence.PubSubPattern})
		got := make(rawInbox, 10)
		f, err := s.NewFeed(ctxT(t), presence.FeedHandlers{Presence: func(ev presence.RawEvent) { got <- ev }, Linger: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.FollowRoom(ctxT(t), "r"); err != nil {
			t.Fatal(err)
		}
		if st := f.Stats(); st.Rooms != 1 || st.SubscribedRooms != 0 {
			t.Fatalf("stats %+v", st)
		}
		if _, err := s.Join(ctxT(t), "other", "c", "u", nil); err != nil {
			t.Fatal(err)
		}
		if ev := got.next(t, "an event of a room not followed"); ev.Target != "other" {
			t.Fatalf("target %q", ev.Target)
		}
		f.UnfollowRoom("r")
		if st := f.Stats(); st.Rooms != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// Subscribe-all in channels and sharded mode: the mode's patterns (room
// presence, room metadata), or in sharded mode the active-rooms index for
// presence, where a room added later counts as a resubscription and
// SubscribeUsers is refused.
func TestSubscribeAllPerMode(t *testing.T) {
	for _, tc := range []struct {
		mode string
		srv  func(testing.TB) *redistest.Server
	}{
		{presence.PubSubChannels, redistest.Standalone},
		{presence.PubSubSharded, redistest.Cluster},
	} {
		for _, be := range []string{"rueidis", "goredis"} {
			t.Run(tc.mode+"/"+be, func(t *testing.T) {
				c := connectBackend(t, be, tc.srv(t))
				if _, ok := c.(backend.ChannelSubscriber); !ok {
					if tc.mode == presence.PubSubSharded {
						t.Skipf("%s does not implement backend.ChannelSubscriber", be)
					}
					c = chandouble.Wrap(c)
				}
				s := newService(t, c, presence.Config{PubSub: tc.mode})
				ctx := ctxT(t)
				raw, meta := make(rawInbox, 100), make(rawInbox, 100)
				sub, err := s.SubscribeRaw(ctx, func(ev presence.RawEvent) { raw <- ev })
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Close()
				msub, err := s.SubscribeMetadataRaw(ctx, func(ev presence.RawEvent) { meta <- ev })
				if err != nil {
					t.Fatal(err)
				}
				defer msub.Close()
				_, uerr := s.SubscribeUsers(ctx, func(presence.UserEvent) {})
				if tc.mode == presence.PubSubSharded {
					if !errors.Is(uerr, presence.ErrInvalidArgument) {
						t.Fatalf("SubscribeUsers in sharded mode: %v, want ErrInvalidArgument", uerr)
					}
				} else if uerr != nil {
					t.Fatal(uerr)
				}

				// A room joined through the subscriber's own Service is
				// followed before the join runs, in every mode.
				const room = "a:room"
				if _, err := s.Join(ctx, room, "c", "u", nil); err != nil {
					t.Fatal(err)
				}
				if ev := raw.next(t, "own join"); ev.Target != room {
					t.Fatalf("target %q", ev.Target)
				}
				// Sharded: a room joined through another node is subscribed
				// at the next listing of the index, so its first events may
				// be missed, and it counts as a resubscription.
				o := newService(t, chandouble.Wrap(connectBackend(t, be, tc.srv(t))), presence.Config{PubSub: tc.mode, KeyPrefix: s.Config().KeyPrefix})
				const other = "b:room"
				if _, err := o.Join(ctx, other, "c", "u", nil); err != nil {
					t.Fatal(err)
				}
				deadline := time.Now().Add(10 * time.Second)
				for got := false; !got; {
					select {
					case ev := <-raw:
						got = ev.Target == other
					case <-time.After(200 * time.Millisecond):
						if time.Now().After(deadline) {
							t.Fatal("no presence event of a room joined through another node")
						}
						if _, err := o.Heartbeat(ctx, other, "c", presence.HeartbeatParams{PatchState: []byte(fmt.Sprintf(`{"n":%d}`, time.Now().UnixNano()))}); err != nil {
							t.Fatal(err)
						}
					}
				}
				if n := presence.Resubscriptions(sub); tc.mode == presence.PubSubSharded && n < 1 {
					t.Errorf("a room added after the first listing: Resubscriptions %d, want ≥ 1", n)
				}
				if _, err := s.SetMetadata(ctx, presence.Channel{Type: "doc", Name: room}, []presence.Item{{Key: "k", Value: "v"}}, presence.MetadataOptions{}); err != nil {
					t.Fatal(err)
				}
				if ev := meta.next(t, "metadata event"); ev.Target != room {
					t.Fatalf("metadata target %q, want %q", ev.Target, room)
				}
			})
		}
	}
}
