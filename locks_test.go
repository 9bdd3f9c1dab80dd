package presence_test

import (
	"cmp"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/embedded"
	"github.com/realtime-message/presence/internal/redistest"
)

func TestLockAcquireRenewReleaseGet(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		clk := newFakeClock()
		// The hour-long TTLs below are over the default cap of 10 minutes.
		s := newService(t, tg.connect(t), presence.Config{Now: clk.Now, Logger: quiet, MaxLockTTL: 3 * time.Hour})
		ctx := ctxT(t)
		l, err := s.GetLock(ctx, chanA, "edit")
		if err != nil || l.Held() || l.Owner != "" || !l.ExpiresAt.IsZero() || l.Name != "edit" {
			t.Fatalf("free lock: %+v %v", l, err)
		}
		l, err = s.AcquireLock(ctx, chanA, "edit", "alice", time.Minute)
		if err != nil || l.Owner != "alice" || !l.ExpiresAt.Equal(clk.Now().Add(time.Minute)) {
			t.Fatalf("acquire: %+v %v", l, err)
		}
		// Another owner cannot take, renew or release it.
		if _, err := s.AcquireLock(ctx, chanA, "edit", "bob", time.Minute); !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("bob acquires alice's lock: %v", err)
		}
		if _, err := s.RenewLock(ctx, chanA, "edit", "bob", time.Minute); !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("bob renews alice's lock: %v", err)
		}
		if err := s.ReleaseLock(ctx, chanA, "edit", "bob"); !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("bob releases alice's lock: %v", err)
		}
		if l, err := s.GetLock(ctx, chanA, "edit"); err != nil || l.Owner != "alice" {
			t.Fatalf("after bob's attempts: %+v %v", l, err)
		}
		// The owner re-acquires (extends) and renews.
		clk.Advance(time.Second)
		l, err = s.AcquireLock(ctx, chanA, "edit", "alice", time.Hour)
		if err != nil || !l.ExpiresAt.Equal(clk.Now().Add(time.Hour)) {
			t.Fatalf("re-acquire: %+v %v", l, err)
		}
		if pttl := lockPTTL(t, s, "edit"); pttl <= int64(time.Minute/time.Millisecond) {
			t.Fatalf("re-acquire did not extend the TTL: %dms", pttl)
		}
		l, err = s.RenewLock(ctx, chanA, "edit", "alice", 2*time.Hour)
		if err != nil || l.Owner != "alice" || !l.ExpiresAt.Equal(clk.Now().Add(2*time.Hour)) {
			t.Fatalf("renew: %+v %v", l, err)
		}
		if pttl := lockPTTL(t, s, "edit"); pttl <= int64(time.Hour/time.Millisecond) {
			t.Fatalf("renew did not extend the TTL: %dms", pttl)
		}
		l, err = s.GetLock(ctx, chanA, "edit")
		if err != nil || l.Owner != "alice" || l.ExpiresAt.Before(clk.Now().Add(time.Hour)) || l.ExpiresAt.After(clk.Now().Add(2*time.Hour)) {
			t.Fatalf("get: %+v %v", l, err)
		}
		// Locks are per channel and per name.
		if _, err := s.AcquireLock(ctx, chanA, "other", "bob", time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AcquireLock(ctx, presence.Channel{Type: "room", Name: "lobby:2"}, "edit", "bob", time.Minute); err != nil {
			t.Fatal(err)
		}
		// The owner releases; then it is free, and renewing or releasing a
		// free lock is ErrLocked.
		if err := s.ReleaseLock(ctx, chanA, "edit", "alice"); err != nil {
			t.Fatal(err)
		}
		if l, err := s.GetLock(ctx, chanA, "edit"); err != nil || l.Held() {
			t.Fatalf("after release: %+v %v", l, err)
		}
		if err := s.ReleaseLock(ctx, chanA, "edit", "alice"); !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("release of a free lock: %v", err)
		}
		if _, err := s.RenewLock(ctx, chanA, "edit", "alice", time.Minute); !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("renew of a free lock: %v", err)
		}
		if _, err := s.AcquireLock(ctx, chanA, "edit", "bob", time.Minute); err != nil {
			t.Fatalf("bob acquires the released lock: %v", err)
		}
	})
}

func lockPTTL(t *testing.T, s *presence.Service, name string) int64 {
	t.Helper()
	r, err := s.Client().Do(ctxT(t), backend.K("PTTL", s.Keys().Lock(chanA.Type, chanA.Name, name)))
	if err != nil {
		t.Fatal(err)
	}
	n, err := r[0].AsInt()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A lock's TTL frees it: on real Redis by expiry, on the embedded server by
// its wall-clock TTLs (package embedded turns them on).
func TestLockExpiryFreesLock(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), presence.Config{Logger: quiet})
		ctx := ctxT(t)
		if _, err := s.AcquireLock(ctx, chanA, "edit", "alice", 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if pttl := lockPTTL(t, s, "edit"); pttl <= 0 || pttl > 100 {
			t.Fatalf("PTTL %d, want in (0, 100]", pttl)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			l, err := s.GetLock(ctx, chanA, "edit")
			if err != nil {
				t.Fatal(err)
			}
			if !l.Held() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a 100ms lock is still held: %+v", l)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := s.AcquireLock(ctx, chanA, "edit", "bob", time.Minute); err != nil {
			t.Fatalf("acquire after expiry: %v", err)
		}
		// alice's lock is gone: her locked mutations fail.
		_, err := s.SetMetadata(ctx, chanA, nil, presence.MetadataOptions{LockName: "edit", Actor: "alice"})
		if !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("alice mutates under bob's lock: %v", err)
		}
	})
}

// A mutation under another owner's lock writes nothing and publishes
// nothing, and a lock released by its owner lets the next owner write.
func TestLockGuardsMutations(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		e := newMetaEnv(t, tg, spec)
		ctx := ctxT(t)
		if _, err := e.s.AcquireLock(ctx, chanA, "edit", "alice", time.Minute); err != nil {
			t.Fatal(err)
		}
		as := func(user string) presence.MetadataOptions {
			return presence.MetadataOptions{LockName: "edit", Actor: user, AddUserID: true}
		}
		res(e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "k", Value: "alice"}}, as("alice"))).must(t)
		if _, err := e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "k", Value: "bob"}}, as("bob")); !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("bob writes under alice's lock: %v", err)
		}
		if err := e.s.ReleaseLock(ctx, chanA, "edit", "bob"); !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("bob releases alice's lock: %v", err)
		}
		if err := e.s.ReleaseLock(ctx, chanA, "edit", "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.s.AcquireLock(ctx, chanA, "edit", "bob", time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "k", Value: "alice2"}}, as("alice")); !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("alice writes under bob's lock: %v", err)
		}
		r := res(e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "k", Value: "bob"}}, as("bob"))).must(t)
		if k := r.Metadata["k"]; k.Value != "bob" || k.AuthorUID != "bob" || k.Revision != 2 || r.MajorRevision != 2 {
			t.Fatalf("bob's update: %+v", r)
		}
		evs := e.events.until(t, chanA, 2)
		if len(evs) != 2 || evs[0].AuthorUID != "alice" || evs[1].AuthorUID != "bob" {
			t.Fatalf("events %+v", evs)
		}
	})
}

// Enforced locks: while alice holds a lock of the channel, every set,
// update and remove that is not hers under a lock she names is refused,
// writes nothing and publishes nothing; a second lock held by someone else
// bars her too; once the locks are released or expired, anyone writes.
// An advisory service on the same keys is unaffected.
func TestLockEnforced(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		c := tg.connect(t)
		if name, _, _ := strings.Cut(spec, "?"); name == "watch" {
			// Refused: see WatchMetadata.EnforcesLocks.
			if _, err := presence.New(c, presence.Config{Metadata: spec, Locks: presence.LocksEnforced, KeyPrefix: redistest.Prefix(t), Logger: quiet}); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Fatalf("New with %s and enforced locks: %v, want ErrInvalidArgument", spec, err)
			}
			return
		}
		s := newService(t, c, presence.Config{Metadata: spec, Locks: presence.LocksEnforced, Logger: quiet})
		advisory := newService(t, c, presence.Config{Metadata: spec, KeyPrefix: s.Config().KeyPrefix, Logger: quiet})
		events := subscribeMeta(t, s)
		ctx := ctxT(t)
		res(s.SetMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "1"}}, presence.MetadataOptions{Actor: "bob"})).must(t)
		if _, err := s.AcquireLock(ctx, chanA, "edit", "alice", time.Minute); err != nil {
			t.Fatal(err)
		}
		if got, want := indexPTTL(t, s), lockPTTL(t, s, "edit"); got < want {
			t.Fatalf("lock index PTTL %d below the lock's %d: it could expire while the lock is held", got, want)
		}
		refused := func(what string, o presence.MetadataOptions) {
			t.Helper()
			_, e1 := s.SetMetadata(ctx, chanA, []presence.Item{{Key: "b", Value: "2"}}, o)
			_, e2 := s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "2"}}, o)
			_, e3 := s.RemoveMetadata(ctx, chanA, nil, o)
			_, e4 := s.RemoveMetadata(ctx, chanA, []string{"a"}, o)
			// Removing what is not there writes nothing, but is refused
			// all the same: a lock bars the request, not only its writes.
			_, e5 := s.RemoveMetadata(ctx, chanA, []string{"missing"}, o)
			for i, err := range []error{e1, e2, e3, e4, e5} {
				if !errors.Is(err, presence.ErrLocked) {
					t.Errorf("%s: op %d: %v, want ErrLocked", what, i, err)
				}
			}
		}
		opts := func(actor, lock string) presence.MetadataOptions {
			return presence.MetadataOptions{Actor: actor, LockName: lock}
		}
		refused("bob without lockName", opts("bob", ""))
		refused("bob naming alice's lock", opts("bob", "edit"))
		refused("nobody", opts("", ""))
		refused("alice without lockName", opts("alice", ""))
		refused("alice naming a free lock", opts("alice", "free"))
		if g := mustGet(t, s, chanA); !slices.Equal(entries(g), []string{"a=1@1"}) || g.MajorRevision != 1 {
			t.Fatalf("a refused mutation wrote: %+v", g)
		}
		r := res(s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "alice"}}, opts("alice", "edit"))).must(t)
		if r.MajorRevision != 2 {
			t.Fatalf("alice's update under her lock: %+v", r)
		}

		// A second lock, bob's, bars alice: neither can write.
		if _, err := s.AcquireLock(ctx, chanA, "review", "bob", time.Minute); err != nil {
			t.Fatal(err)
		}
		refused("alice under her lock while bob holds another", opts("alice", "edit"))
		refused("bob under his lock while alice holds another", opts("bob", "review"))
		if err := s.ReleaseLock(ctx, chanA, "review", "bob"); err != nil {
			t.Fatal(err)
		}

		// Advisory mode is as it always was.
		res(advisory.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "advisory"}}, opts("bob", ""))).must(t)

		// Released: anyone writes, and the index is gone with the last lock.
		if err := s.ReleaseLock(ctx, chanA, "edit", "alice"); err != nil {
			t.Fatal(err)
		}
		if n := indexPTTL(t, s); n != -2 {
			t.Fatalf("lock index still there after the last release (PTTL %d)", n)
		}
		r = res(s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "bob"}}, opts("bob", ""))).must(t)
		if r.MajorRevision != 4 {
			t.Fatalf("bob's update after the release: %+v", r)
		}

		// Expired: likewise (the embedded server's TTLs follow the wall clock).
		if _, err := s.AcquireLock(ctx, chanA, "brief", "alice", 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		refused("bob while alice's brief lock is held", opts("bob", ""))
		deadline := time.Now().Add(10 * time.Second)
		for {
			l, err := s.GetLock(ctx, chanA, "brief")
			if err != nil {
				t.Fatal(err)
			}
			if !l.Held() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a 100ms lock is still held: %+v", l)
			}
			time.Sleep(20 * time.Millisecond)
		}
		r = res(s.RemoveMetadata(ctx, chanA, nil, opts("bob", ""))).must(t)
		if r.MajorRevision != 5 || r.TotalCount != 0 {
			t.Fatalf("bob's remove after the expiry: %+v", r)
		}
		// Only the successful mutations published (the advisory one too).
		if evs := events.until(t, chanA, 5); len(evs) != 5 {
			t.Fatalf("%d events, want 5: %+v", len(evs), evs)
		}
	})
}

// indexPTTL is the PTTL of chanA's lock index (-2: no index).
func indexPTTL(t *testing.T, s *presence.Service) int64 {
	t.Helper()
	r, err := s.Client().Do(ctxT(t), backend.K("PTTL", s.Keys().LockIndex(chanA.Type, chanA.Name)))
	if err != nil {
		t.Fatal(err)
	}
	n, err := r[0].AsInt()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestEnforcedLocksRefuseWatch: the watch strategy's enforcement failed the
// linearizability check, so the combination is refused, not run.
func TestEnforcedLocksRefuseWatch(t *testing.T) {
	srv, err := embedded.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, spec := range []string{"watch", "watch?retries=3"} {
		_, err := presence.Open(ctxT(t), presence.Config{Addrs: []string{srv.Addr()}, Metadata: spec, Locks: presence.LocksEnforced, Logger: quiet})
		if !errors.Is(err, presence.ErrInvalidArgument) {
			t.Errorf("Open with %s and enforced locks: %v, want ErrInvalidArgument", spec, err)
		}
	}
	s, err := presence.Open(ctxT(t), presence.Config{Addrs: []string{srv.Addr()}, Metadata: "watch", Locks: presence.LocksAdvisory, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestLocksConfig(t *testing.T) {
	t.Setenv("PRESENCE_LOCKS", "enforced")
	cfg, err := presence.ConfigFromEnv()
	if err != nil || cfg.Locks != presence.LocksEnforced {
		t.Fatalf("ConfigFromEnv: %+v, %v", cfg.Locks, err)
	}
	srv, err := embedded.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, locks := range []string{"", "advisory", "enforced", "Enforced", "strict"} {
		s, err := presence.Open(ctxT(t), presence.Config{Addrs: []string{srv.Addr()}, Locks: locks, Logger: quiet})
		valid := locks == "" || locks == "advisory" || locks == "enforced"
		switch {
		case valid && err != nil:
			t.Errorf("Open with Locks %q: %v", locks, err)
		case !valid && !errors.Is(err, presence.ErrInvalidArgument):
			t.Errorf("Open with Locks %q = %v, want ErrInvalidArgument", locks, err)
			if s != nil {
				s.Close()
			}
		case valid:
			if want := cmp.Or(locks, "advisory"); s.Config().Locks != want {
				t.Errorf("Locks %q became %q", locks, s.Config().Locks)
			}
			s.Close()
		}
	}
}
