package conformance

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"pgregory.net/rapid"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// checkUsers asserts docs/DESIGN.md's user index guarantee: Options.Clients
// clients on Options.Nodes services join (as either of two users, so a
// conn also changes hands), leave, heartbeat, let conns expire and run
// the reaper, for Options.Duration, with ten times Options.FaultRate of
// the calls failing ambiguously; a client retries a failed call until it
// returns nil, as the guarantee requires. After quiescence (every call
// returned, one reaper pass past the lookback, one repair pass):
//
//   - each user's index (Service.User) is exactly the union, over the
//     rooms, of that user's live conns (Service.Snapshot), and an offline
//     user's index key no longer exists;
//   - each user's events, as one subscriber got them, alternate online,
//     offline, … from online, and end in online iff the user has a conn:
//     no transition is announced twice or missed.
func checkUsers(tb rapid.TB, h *harness) {
	prefix := h.prefix()
	clock := newFakeClock(time.Now())
	rate := h.opts.FaultRate * 10
	var nodes []*presence.Service
	for range h.opts.Nodes {
		s, err := h.service(faulty{h.client(), rate}, prefix, clock.Now)
		if err != nil {
			tb.Fatalf("presence.New: %v", err)
		}
		h.t.Cleanup(func() { s.Close() })
		nodes = append(nodes, s)
	}
	c := h.client()
	ref, err := h.service(c, prefix, clock.Now)
	if err != nil {
		tb.Fatalf("presence.New: %v", err)
	}
	h.t.Cleanup(func() {
		ref.Close()
		cleanup(c, prefix)
	})

	var emu sync.Mutex
	events := map[string][]string{}
	sub, err := observe(context.Background(), ref, nil, userIDs, nil, func(e presence.UserEvent) {
		emu.Lock()
		events[e.UserID] = append(events[e.UserID], e.Type)
		emu.Unlock()
	})
	if err != nil {
		tb.Fatalf("observe: %v", err)
	}
	defer sub.Close()

	var ops, retries atomic.Int64
	var unexpected errorLog
	deadline := time.Now().Add(h.opts.Duration)
	var wg sync.WaitGroup
	for range h.opts.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ops.Add(1) <= int64(h.opts.MaxOps) {
				svc := nodes[rand.IntN(len(nodes))]
				room, conn, user := pick(roomIDs), pick(connIDs), pick(userIDs)
				var call func(s *presence.Service, ctx context.Context) error
				switch p := rand.IntN(100); {
				case p < 45:
					call = func(s *presence.Service, ctx context.Context) error {
						_, err := s.Join(ctx, room, conn, user, nil)
						return err
					}
				case p < 75:
					call = func(s *presence.Service, ctx context.Context) error { return s.Leave(ctx, room, conn) }
				case p < 85:
					call = func(s *presence.Service, ctx context.Context) error {
						_, err := s.Heartbeat(ctx, room, conn, presence.HeartbeatParams{})
						if errors.Is(err, presence.ErrConnNotFound) {
							return nil
						}
						return err
					}
				case p < 95:
					// The conn's TTL runs out: its hash goes; the reaper
					// removes it from the room later.
					call = func(s *presence.Service, ctx context.Context) error {
						_, err := s.Client().Do(ctx, backend.K("DEL", s.Keys().Conn(room, conn)))
						return err
					}
				default:
					call = func(s *presence.Service, ctx context.Context) error {
						clock.Advance(s.Config().ReaperLookback + time.Second)
						_, err := s.Reap(ctx)
						return err
					}
				}
				err := h.userCall(svc, call)
				for try := 0; err != nil && try < 20; try++ {
					if _, unexp := classify(err); unexp {
						unexpected.add("call", err)
						return
					}
					retries.Add(1)
					err = h.userCall(ref, call)
				}
				if err != nil {
					unexpected.add("retries", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if unexpected.n > 0 {
		tb.Fatalf("%d calls failed unexpectedly, e.g. %v", unexpected.n, unexpected.first)
	}

	// Quiescence: the expired conns are reaped, then one repair pass.
	clock.Advance(ref.Config().ReaperLookback + time.Second)
	ctx, cancel := h.ctx()
	defer cancel()
	if _, err := ref.Reap(ctx); err != nil {
		tb.Fatalf("Reap: %v", err)
	}
	repaired, err := ref.RepairUsers(ctx)
	if err != nil {
		tb.Fatalf("RepairUsers: %v", err)
	}
	want := map[string]map[string][]string{}
	for _, room := range roomIDs {
		snap, err := ref.Snapshot(ctx, room)
		if err != nil {
			tb.Fatalf("Snapshot: %v", err)
		}
		for _, e := range snap {
			if want[e.UserID] == nil {
				want[e.UserID] = map[string][]string{}
			}
			want[e.UserID][room] = append(want[e.UserID][room], e.ConnID)
		}
	}
	for _, u := range userIDs {
		p, err := ref.User(ctx, u)
		if err != nil {
			tb.Fatalf("User: %v", err)
		}
		got := map[string][]string{}
		for _, r := range p.Rooms {
			got[r.RoomID] = r.Conns
		}
		for _, conns := range want[u] {
			slices.Sort(conns)
		}
		if fmt.Sprint(got) != fmt.Sprint(want[u]) || p.Online != (len(want[u]) > 0) {
			tb.Fatalf("after quiescence the index of %s is %v (online %v), the rooms hold %v", u, got, p.Online, want[u])
		}
		if len(want[u]) == 0 {
			r, err := ref.Client().Do(ctx, backend.K("EXISTS", ref.Keys().UserIndex(u)))
			if n, _ := r0Int(r, err); n != 0 {
				tb.Fatalf("%s has no conn and its index key is still there", u)
			}
		}
	}

	// Each user's events alternate from online and end where the index is.
	var last map[string][]string
	for end := time.Now().Add(3 * time.Second); ; {
		emu.Lock()
		last = map[string][]string{}
		for u, evs := range events {
			last[u] = slices.Clone(evs)
		}
		emu.Unlock()
		if settled(last, want) || time.Now().After(end) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, u := range userIDs {
		evs := last[u]
		for i, e := range evs {
			if want := [2]string{"online", "offline"}[i%2]; e != want {
				tb.Fatalf("%s's user events %v: event %d is %s, want %s (a transition announced twice, or one missed)", u, brief(evs), i, e, want)
			}
		}
		if online := len(evs)%2 == 1; online != (len(want[u]) > 0) {
			tb.Fatalf("%s's user events %v end online=%v, but the user has conns %v", u, brief(evs), online, want[u])
		}
	}
	tb.Logf("users: %d operations, %d retried, %d entries repaired", min(ops.Load(), int64(h.opts.MaxOps)), retries.Load(), repaired)
}

// userCall runs one call with the per-call deadline.
func (h *harness) userCall(s *presence.Service, call func(*presence.Service, context.Context) error) error {
	ctx, cancel := h.ctx()
	defer cancel()
	return call(s, ctx)
}

func pick[T any](s []T) T { return s[rand.IntN(len(s))] }

// settled reports whether every user's events end where the index is.
func settled(events map[string][]string, want map[string]map[string][]string) bool {
	for _, u := range userIDs {
		if len(events[u])%2 == 1 != (len(want[u]) > 0) {
			return false
		}
	}
	return true
}

func brief(evs []string) string {
	if len(evs) <= 12 {
		return strings.Join(evs, ",")
	}
	return strings.Join(evs[:6], ",") + ",…," + strings.Join(evs[len(evs)-6:], ",")
}

func r0Int(r []backend.Reply, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return r[0].AsInt()
}
