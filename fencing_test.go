package presence_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// Issue 15 (1): every acquisition gets a greater token, renew keeps it, and
// a write under a token that a later acquisition superseded is refused
// with ErrLocked, writing and publishing nothing — the same owner's second
// acquisition included (a holder that paused past its TTL while another
// process of the same user took the lock again).
func TestFencingTokenFencesStaleHolder(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		e := newMetaEnv(t, tg, spec)
		ctx := ctxT(t)
		l1, err := e.s.AcquireLock(ctx, chanA, "edit", "alice", time.Minute)
		if err != nil || l1.FencingToken <= 0 {
			t.Fatalf("acquire: %+v %v", l1, err)
		}
		r, err := e.s.RenewLock(ctx, chanA, "edit", "alice", time.Minute)
		if err != nil || r.FencingToken != l1.FencingToken {
			t.Fatalf("renew changed the token %d: %+v %v", l1.FencingToken, r, err)
		}
		under := func(tok int64) presence.MetadataOptions {
			return presence.MetadataOptions{LockName: "edit", Actor: "alice", FencingToken: tok}
		}
		res(e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "k", Value: "1"}}, under(l1.FencingToken))).must(t)
		l2, err := e.s.AcquireLock(ctx, chanA, "edit", "alice", time.Minute)
		if err != nil || l2.FencingToken <= l1.FencingToken {
			t.Fatalf("second acquisition by the same owner: token %d after %d (%v)", l2.FencingToken, l1.FencingToken, err)
		}
		for _, stale := range []int64{l1.FencingToken, l2.FencingToken + 1} {
			_, err := e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "k", Value: "stale"}}, under(stale))
			if !errors.Is(err, presence.ErrLocked) {
				t.Fatalf("write under token %d after token %d was handed out: %v", stale, l2.FencingToken, err)
			}
		}
		res(e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "k", Value: "2"}}, under(l2.FencingToken))).must(t)
		if g := mustGet(t, e.s, chanA); !slices.Equal(entries(g), []string{"k=2@2"}) || g.MajorRevision != 2 {
			t.Fatalf("after the fenced writes: %v major %d", entries(g), g.MajorRevision)
		}
		if evs := e.events.until(t, chanA, 2); len(evs) != 2 {
			t.Fatalf("events %+v", evs)
		}
		// Another owner's acquisition supersedes it too.
		if err := e.s.ReleaseLock(ctx, chanA, "edit", "alice"); err != nil {
			t.Fatal(err)
		}
		l3, err := e.s.AcquireLock(ctx, chanA, "edit", "bob", time.Minute)
		if err != nil || l3.FencingToken <= l2.FencingToken {
			t.Fatalf("bob's acquisition: token %d after %d (%v)", l3.FencingToken, l2.FencingToken, err)
		}
		// GetLock reports the holder's token, none for a free lock.
		if g, err := e.s.GetLock(ctx, chanA, "edit"); err != nil || g.Owner != "bob" || g.FencingToken != l3.FencingToken {
			t.Fatalf("GetLock after bob's acquisition (token %d): %+v %v", l3.FencingToken, g, err)
		}
		if g, err := e.s.GetLock(ctx, chanA, "other"); err != nil || g.Held() || g.FencingToken != 0 {
			t.Fatalf("GetLock of a free lock: %+v %v", g, err)
		}
		o := presence.MetadataOptions{LockName: "edit", Actor: "bob", FencingToken: l2.FencingToken}
		if _, err := e.s.RemoveMetadata(ctx, chanA, nil, o); !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("bob writes under alice's old token: %v", err)
		}
		o.FencingToken = l3.FencingToken
		res(e.s.RemoveMetadata(ctx, chanA, nil, o)).must(t)
	})
}

// Tokens keep growing when the fence key is gone (expired keepMs after its
// lock, or lost with the data), because the Redis clock floors them, and
// across services of either metadata strategy (a restart is a new Service
// on the same keys). The fence key itself always has a TTL, so an empty
// channel keeps no key (TestNoLeakedKeys runs it too).
func TestFencingTokenSurvivesExpiryAndRestart(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		c := tg.connect(t)
		a := newService(t, c, presence.Config{Logger: quiet, Metadata: "lua"})
		b := newService(t, c, presence.Config{Logger: quiet, Metadata: "watch", KeyPrefix: a.Config().KeyPrefix})
		ctx := ctxT(t)
		fence := a.Keys().Fence(chanA.Type, chanA.Name, "edit")
		last := int64(0)
		for i, s := range []*presence.Service{a, b, a, b, a} {
			l, err := s.AcquireLock(ctx, chanA, "edit", "alice", time.Minute)
			if err != nil || l.FencingToken <= last {
				t.Fatalf("acquisition %d: token %d after %d (%v)", i, l.FencingToken, last, err)
			}
			last = l.FencingToken
			r, err := c.Do(ctx, backend.K("PTTL", fence))
			if err != nil {
				t.Fatal(err)
			}
			if pttl, _ := r[0].AsInt(); pttl <= 60_000 || pttl > 62_000 {
				t.Fatalf("fence key PTTL %dms, want in (60000, 62000]", pttl)
			}
			// Every other round, the fence key and the lock are gone, as
			// after their expiry: the clock alone must still give more.
			if i%2 == 1 {
				if _, err := c.Do(ctx, backend.K("DEL", fence), backend.K("DEL", s.Keys().Lock(chanA.Type, chanA.Name, "edit"))); err != nil {
					t.Fatal(err)
				}
			}
		}
		// The token written under passes on the other strategy's service.
		o := presence.MetadataOptions{LockName: "edit", Actor: "alice", FencingToken: last}
		res(a.SetMetadata(ctx, chanA, []presence.Item{{Key: "k", Value: "v"}}, o)).must(t)
		res(b.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "k", Value: "w"}}, o)).must(t)
	})
}

func TestFencingTokenValidation(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), presence.Config{Logger: quiet})
		ctx := ctxT(t)
		for _, o := range []presence.MetadataOptions{
			{Actor: "alice", FencingToken: 5},                    // no lockName
			{Actor: "alice", LockName: "edit", FencingToken: -1}, // negative
		} {
			if _, err := s.SetMetadata(ctx, chanA, nil, o); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Errorf("%+v: %v", o, err)
			}
		}
		if g := mustGet(t, s, chanA); g.MajorRevision != 0 {
			t.Fatalf("an invalid mutation wrote: %+v", g)
		}
	})
}

// Issue 15 (3): a refused compare-and-set returns the record its check
// read, so the retry needs no GetMetadata; retrying against it succeeds.
func TestConflictCarriesCurrentRecord(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		e := newMetaEnv(t, tg, spec)
		ctx := ctxT(t)
		res(e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "1"}, {Key: "b", Value: "x"}}, presence.MetadataOptions{AddUserID: true, Actor: "alice"})).must(t)
		res(e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "2"}}, presence.MetadataOptions{})).must(t)
		for name, try := range map[string]func() error{
			"majorRevision": func() error {
				_, err := e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "3"}}, presence.MetadataOptions{MajorRevision: presence.Rev(1)})
				return err
			},
			"item revision": func() error {
				_, err := e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "3", Revision: presence.Rev(1)}}, presence.MetadataOptions{})
				return err
			},
			"remove": func() error {
				_, err := e.s.RemoveMetadata(ctx, chanA, []string{"a"}, presence.MetadataOptions{MajorRevision: presence.Rev(7)})
				return err
			},
		} {
			err := try()
			var ce *presence.ConflictError
			if !errors.Is(err, presence.ErrConflict) || !errors.As(err, &ce) {
				t.Fatalf("%s: %v, want a *ConflictError", name, err)
			}
			cur := ce.Current
			if cur == nil || cur.MajorRevision != 2 || cur.TotalCount != 2 || cur.ChannelName != chanA.Name ||
				!slices.Equal(entries(cur), []string{"a=2@2", "b=x@1"}) || cur.Metadata["b"].AuthorUID != "alice" {
				t.Fatalf("%s: current %+v", name, cur)
			}
		}
		// The retry uses what the conflict returned, and passes.
		_, err := e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "3", Revision: presence.Rev(1)}}, presence.MetadataOptions{})
		var ce *presence.ConflictError
		if !errors.As(err, &ce) {
			t.Fatalf("conflict: %v", err)
		}
		a := ce.Current.Metadata["a"]
		r := res(e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "3", Revision: &a.Revision}},
			presence.MetadataOptions{MajorRevision: &ce.Current.MajorRevision})).must(t)
		if r.MajorRevision != 3 || r.Metadata["a"].Revision != 3 {
			t.Fatalf("retry: %+v", r)
		}
	})
}
