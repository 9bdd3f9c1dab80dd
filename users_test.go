package presence_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/luasrc"
)

// userLog collects user events of a subscription.
type userLog struct {
	mu  sync.Mutex
	evs []presence.UserEvent
}

func subscribeUsers(t *testing.T, s *presence.Service) *userLog {
	t.Helper()
	l := &userLog{}
	sub, err := s.SubscribeUsers(ctxT(t), func(e presence.UserEvent) {
		l.mu.Lock()
		l.evs = append(l.evs, e)
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	return l
}

// wait returns the events once there are n, after a pause in which an
// extra one would have arrived.
func (l *userLog) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		got := len(l.evs)
		l.mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(150 * time.Millisecond)
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, len(l.evs))
	for i, e := range l.evs {
		if e.TS == 0 {
			t.Errorf("event %+v has no ts", e)
		}
		out[i] = e.Type + " " + e.UserID
	}
	return out
}

func userOf(t *testing.T, s *presence.Service, user string) presence.UserPresence {
	t.Helper()
	p, err := s.User(ctxT(t), user)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func wantUser(t *testing.T, s *presence.Service, user string, want map[string][]string) {
	t.Helper()
	p := userOf(t, s, user)
	got := map[string][]string{}
	for _, r := range p.Rooms {
		got[r.RoomID] = r.Conns
	}
	if p.UserID != user || p.Online != (len(want) > 0) || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("User(%s) = %+v, want rooms %v", user, p, want)
	}
	if len(want) == 0 && keyExists(t, s, s.Keys().UserIndex(user)) {
		t.Fatalf("user %s has no conn but its index key is still there", user)
	}
}

func keyExists(t *testing.T, s *presence.Service, key string) bool {
	t.Helper()
	r, err := s.Client().Do(ctxT(t), backend.K("EXISTS", key))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := r[0].AsInt()
	return n == 1
}

// Issue 14 (4): a user's conns across rooms and nodes, online when the
// first appears and offline when the last goes, each announced once; a
// conn taken over by another user moves to that user's index.
func TestUserIndexAcrossRoomsAndNodes(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		cfg := presence.Config{KeyPrefix: "users" + strings.ReplaceAll(t.Name(), "/", "_")}
		a := newService(t, tg.connect(t), cfg)
		b := newService(t, tg.connect(t), cfg)
		ev := subscribeUsers(t, a)
		ctx := ctxT(t)
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		_, err := a.Join(ctx, "r1", "c1", "u1", nil)
		must(err)
		_, err = b.Join(ctx, "r2", "c2", "u1", nil)
		must(err)
		_, err = b.Join(ctx, "r1", "c3", "u1", json.RawMessage(`{"x":1}`))
		must(err)
		_, err = a.Join(ctx, "r1", "c1", "u1", nil) // a rejoin changes nothing
		must(err)
		wantUser(t, b, "u1", map[string][]string{"r1": {"c1", "c3"}, "r2": {"c2"}})
		if _, err := a.Heartbeat(ctx, "r1", "c1", presence.HeartbeatParams{PatchState: json.RawMessage(`{"y":2}`)}); err != nil {
			t.Fatal(err)
		}
		must(a.Leave(ctx, "r1", "c1"))
		must(b.Leave(ctx, "r2", "c2"))
		must(b.Leave(ctx, "r2", "c2")) // leaving twice changes nothing
		wantUser(t, a, "u1", map[string][]string{"r1": {"c3"}})
		// c3 joins again as u2: u1 loses its last conn.
		_, err = a.Join(ctx, "r1", "c3", "u2", nil)
		must(err)
		wantUser(t, a, "u1", nil)
		wantUser(t, a, "u2", map[string][]string{"r1": {"c3"}})
		must(b.Leave(ctx, "r1", "c3"))
		wantUser(t, a, "u2", nil)
		// Events of different users have no order between them on a
		// cluster; each user's do.
		got := ev.wait(t, 4)
		for _, u := range []string{"u1", "u2"} {
			var mine []string
			for _, e := range got {
				if strings.HasSuffix(e, " "+u) {
					mine = append(mine, e)
				}
			}
			if want := []string{"online " + u, "offline " + u}; !slices.Equal(mine, want) {
				t.Fatalf("user events %v: %s's are %v, want %v", got, u, mine, want)
			}
		}
		if len(got) != 4 {
			t.Fatalf("user events %v, want 4", got)
		}
	})
}

// Two nodes adding and removing one user's conns at once announce it
// online once and offline once: the transition is decided in the user's
// slot.
func TestUserOnlineOfflineAnnouncedOnce(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		cfg := presence.Config{KeyPrefix: "once" + strings.ReplaceAll(t.Name(), "/", "_")}
		nodes := []*presence.Service{newService(t, tg.connect(t), cfg), newService(t, tg.connect(t), cfg)}
		ev := subscribeUsers(t, nodes[0])
		ctx := ctxT(t)
		const conns = 16
		run := func(op func(s *presence.Service, i int) error) {
			var wg sync.WaitGroup
			errs := make(chan error, conns)
			for i := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- op(nodes[i%2], i)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		for round := range 3 {
			run(func(s *presence.Service, i int) error {
				_, err := s.Join(ctx, fmt.Sprint("r", i%3), fmt.Sprint("c", i), "u", nil)
				return err
			})
			if p := userOf(t, nodes[1], "u"); len(p.Rooms) != 3 || !p.Online {
				t.Fatalf("round %d: %+v", round, p)
			}
			run(func(s *presence.Service, i int) error { return s.Leave(ctx, fmt.Sprint("r", i%3), fmt.Sprint("c", i)) })
			wantUser(t, nodes[0], "u", nil)
		}
		got := ev.wait(t, 6)
		want := []string{"online u", "offline u", "online u", "offline u", "online u", "offline u"}
		if !slices.Equal(got, want) {
			t.Fatalf("user events %v, want %v", got, want)
		}
	})
}

// The reaper updates the index of the users whose conns it removes.
func TestUserIndexFollowsReaper(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		clk := newFakeClock()
		s := newService(t, tg.connect(t), presence.Config{Now: clk.Now, TTL: 10 * time.Second})
		ev := subscribeUsers(t, s)
		ctx := ctxT(t)
		for _, j := range [][3]string{{"r1", "dead1", "u"}, {"r2", "dead2", "u"}, {"r2", "live", "u"}, {"r1", "other", "v"}} {
			if _, err := s.Join(ctx, j[0], j[1], j[2], nil); err != nil {
				t.Fatal(err)
			}
		}
		clk.Advance(time.Minute)
		for _, c := range [][2]string{{"r1", "dead1"}, {"r2", "dead2"}, {"r1", "other"}} {
			s.Client().Do(ctx, backend.K("DEL", s.Keys().Conn(c[0], c[1]))) // as the TTL would
		}
		if _, err := s.Heartbeat(ctx, "r2", "live", presence.HeartbeatParams{}); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Reap(ctx); err != nil || n != 3 {
			t.Fatalf("reaped %d (%v), want 3", n, err)
		}
		wantUser(t, s, "u", map[string][]string{"r2": {"live"}})
		wantUser(t, s, "v", nil)
		got := ev.wait(t, 3)
		slices.Sort(got) // each user's events are in order; the users' are not
		if want := []string{"offline v", "online u", "online v"}; !slices.Equal(got, want) {
			t.Fatalf("user events %v, want %v", got, want)
		}
	})
}

// A leave whose second step (the user index) is lost, as when its node
// dies between the two, leaves an entry behind that the repair pass
// removes, announcing the user offline then; it also drops users with no
// entry left from active_users.
func TestUserIndexRepairAfterLostSecondStep(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		prefix := "repair" + strings.ReplaceAll(t.Name(), "/", "_")
		c := tg.connect(t)
		crashy := newService(t, userStepLost{c}, presence.Config{KeyPrefix: prefix})
		s := newService(t, c, presence.Config{KeyPrefix: prefix})
		ev := subscribeUsers(t, s)
		ctx := ctxT(t)
		for _, conn := range []string{"c1", "c2"} {
			if _, err := crashy.Join(ctx, "r", conn, "u", nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := crashy.Leave(ctx, "r", "c1"); err == nil {
			t.Fatal("leave reported success although its user index write was lost")
		}
		wantUser(t, s, "u", map[string][]string{"r": {"c1", "c2"}}) // the leftover
		if n, err := s.RepairUsers(ctx); err != nil || n != 1 {
			t.Fatalf("repair removed %d (%v), want the leftover", n, err)
		}
		wantUser(t, s, "u", map[string][]string{"r": {"c2"}})
		if err := crashy.Leave(ctx, "r", "c2"); err == nil {
			t.Fatal("leave reported success although its user index write was lost")
		}
		if n, err := s.RepairUsers(ctx); err != nil || n != 1 {
			t.Fatalf("repair removed %d (%v), want the leftover", n, err)
		}
		wantUser(t, s, "u", nil)
		if got := smembers(t, s, s.Keys().ActiveUsers()); !slices.Equal(got, []string{"u"}) {
			t.Fatalf("active users %v before the pass that finds u empty", got)
		}
		if n, err := s.RepairUsers(ctx); err != nil || n != 0 {
			t.Fatalf("repair of a clean index removed %d (%v)", n, err)
		}
		if keyExists(t, s, s.Keys().ActiveUsers()) {
			t.Fatalf("active users %v after every user went", smembers(t, s, s.Keys().ActiveUsers()))
		}
		if got, want := ev.wait(t, 2), []string{"online u", "offline u"}; !slices.Equal(got, want) {
			t.Fatalf("user events %v, want %v", got, want)
		}
	})
}

// A repair pass racing a rejoin of the same conn id never removes the
// rejoin's entry: the removal is fenced by the epoch the pass read.
func TestUserRepairKeepsNewerEntry(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), presence.Config{})
		ctx := ctxT(t)
		if _, err := s.Join(ctx, "r", "c", "u", nil); err != nil {
			t.Fatal(err)
		}
		// The room forgets the conn behind the index's back (a lost
		// second step), then the conn joins again: its entry is live.
		s.Client().Do(ctx, backend.K("HDEL", s.Keys().ConnMeta("r"), "c"))
		if _, err := s.Join(ctx, "r", "c", "u", nil); err != nil {
			t.Fatal(err)
		}
		if n, err := s.RepairUsers(ctx); err != nil || n != 0 {
			t.Fatalf("repair removed %d (%v) of a live conn", n, err)
		}
		wantUser(t, s, "u", map[string][]string{"r": {"c"}})
	})
}

func TestUserBadInputAndDisabledIndex(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		c := tg.connect(t)
		s := newService(t, c, presence.Config{})
		ctx := ctxT(t)
		for _, u := range []string{"", "a{b", "a}", "x\ny", strings.Repeat("u", 257)} {
			if _, err := s.User(ctx, u); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Fatalf("User(%q): %v, want ErrInvalidArgument", u, err)
			}
		}
		off := newService(t, c, presence.Config{DisableUserIndex: true})
		if _, err := off.Join(ctx, "r", "c", "u", nil); err != nil {
			t.Fatal(err)
		}
		if keyExists(t, off, off.Keys().UserIndex("u")) || keyExists(t, off, off.Keys().ActiveUsers()) {
			t.Fatal("a join with the user index disabled wrote it")
		}
		if _, err := off.User(ctx, "u"); !errors.Is(err, presence.ErrInvalidArgument) {
			t.Fatalf("User with the index disabled: %v, want ErrInvalidArgument", err)
		}
		if err := off.Leave(ctx, "r", "c"); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if _, err := s.User(ctx, "u"); !errors.Is(err, presence.ErrClosed) {
			t.Fatalf("User on a closed service: %v", err)
		}
	})
}

// keyRecorder records every key a client's commands name.
type keyRecorder struct {
	backend.Client
	mu   sync.Mutex
	keys []string
}

func (r *keyRecorder) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	r.mu.Lock()
	for _, c := range cmds {
		r.keys = append(r.keys, c.Keys...)
	}
	r.mu.Unlock()
	return r.Client.Do(ctx, cmds...)
}

// Issue 14 (5): heartbeats never touch the user index.
func TestHeartbeatLeavesUserIndexAlone(t *testing.T) {
	forEachStrategy(t, func(t *testing.T, tg target, spec string) {
		rec := &keyRecorder{Client: tg.connect(t)}
		s := newService(t, rec, presence.Config{Heartbeat: spec})
		ctx := ctxT(t)
		j, err := s.Join(ctx, "r", "c", "u", nil)
		if err != nil {
			t.Fatal(err)
		}
		rec.mu.Lock()
		joined := slices.Contains(rec.keys, s.Keys().UserIndex("u"))
		rec.keys = nil
		rec.mu.Unlock()
		if !joined {
			t.Fatal("the join did not write the user index: the recorder sees nothing")
		}
		for i := range 5 {
			p := presence.HeartbeatParams{Epoch: &j.Epoch, PatchState: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
			if _, err := s.Heartbeat(ctx, "r", "c", p); err != nil {
				t.Fatal(err)
			}
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, k := range rec.keys {
			if strings.Contains(k, "{user:") || strings.HasSuffix(k, ":active_users") {
				t.Fatalf("a heartbeat touched %s", k)
			}
		}
	})
}

// userStepLost sends every command but the user index's removals, and
// fails a call that had one, as a node that died between a leave's room
// script and its user step would.
type userStepLost struct{ backend.Client }

func (c userStepLost) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	kept := slices.DeleteFunc(slices.Clone(cmds), func(c backend.Cmd) bool {
		return len(c.Pre) > 0 && (c.Pre[0] == luasrc.UserRemove.SHA1 || c.Pre[0] == luasrc.UserRemove.Source)
	})
	if len(kept) == len(cmds) {
		return c.Client.Do(ctx, cmds...)
	}
	if len(kept) > 0 {
		c.Client.Do(ctx, kept...)
	}
	return nil, errors.New("connection reset by peer")
}
