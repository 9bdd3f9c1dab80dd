package conformance

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// oneAttempt checks that a mutation refused for a genuine conflict on a
// channel nobody else writes is refused at once: one attempt, one
// conflict, as the strategy reports them through Config.Hooks. Retrying
// such a conflict cannot succeed and is invisible in a history (the
// outcome is the same ErrConflict), so only the hooks can show it. A
// strategy that reports no attempt for a plain set leaves this unchecked,
// and the log says so.
func (m *caser) oneAttempt() {
	var attempts, conflicts atomic.Int64
	prefix := m.h.prefix()
	defer cleanup(m.c, prefix)
	svc, err := m.h.serviceWith(m.c, prefix, m.clock.Now, func(cfg *presence.Config) {
		cfg.Hooks.MetadataAttempt = func() { attempts.Add(1) }
		cfg.Hooks.MetadataConflict = func() { conflicts.Add(1) }
	})
	if err != nil {
		m.tb.Fatalf("presence.New: %v", err)
	}
	defer svc.Close()
	ch := chanIDs[0]
	run := func(what string, mu mutation, want error) (int64, int64) {
		m.tb.Helper()
		m.ops++
		attempts.Store(0)
		conflicts.Store(0)
		_, err := mu(m.ctx())
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			m.tb.Fatalf("%s = %v, want %v", what, err, want)
		}
		return attempts.Load(), conflicts.Load()
	}
	set := func(v string, o presence.MetadataOptions) mutation {
		return func(ctx context.Context) (*presence.MetadataResponse, error) {
			return svc.SetMetadata(ctx, ch, []presence.Item{item("a", v, -1)}, o)
		}
	}
	if a, _ := run("one-attempt: Set(a=x, majorRevision 0)", set("x", major(0)), nil); a == 0 {
		m.tb.Logf("cas: the strategy reports no attempts through Hooks.MetadataAttempt; \"one attempt on an uncontended conflict\" is unchecked")
		return
	}
	update := func(rev int64, o presence.MetadataOptions) mutation {
		return func(ctx context.Context) (*presence.MetadataResponse, error) {
			return svc.UpdateMetadata(ctx, ch, []presence.Item{item("a", "y", rev)}, o)
		}
	}
	remove := func(ctx context.Context) (*presence.MetadataResponse, error) {
		return svc.RemoveMetadata(ctx, ch, nil, major(0))
	}
	for _, c := range []struct {
		what string
		mu   mutation
	}{
		{"Set(majorRevision 0) at majorRevision 1", set("y", major(0))},
		{"Update(a, revision 5) at revision 1", update(5, none)},
		{"Update(a, majorRevision 7) at majorRevision 1", update(-1, major(7))},
		{"Remove(majorRevision 0) at majorRevision 1", remove},
	} {
		what := "one-attempt: " + c.what + " with no concurrent writer"
		if a, n := run(what, c.mu, presence.ErrConflict); a != 1 || n != 1 {
			m.tb.Errorf("%s: %d attempts and %d conflicts reported through Hooks, want 1 and 1: a genuine conflict must fail at once, not be retried", what, a, n)
		}
	}
}

// lockInjector is a backend.Client whose next transaction, once armed,
// runs a change of the channel's locks from another connection after the
// strategy's reads and before its EXEC: the window in which a WATCH that
// forgets a lock key lets a write commit against a lock it did not see.
type lockInjector struct {
	backend.Client
	mu    sync.Mutex
	armed func()
}

func (l *lockInjector) arm(f func()) {
	l.mu.Lock()
	l.armed = f
	l.mu.Unlock()
}

// take returns the armed change, once.
func (l *lockInjector) take() func() {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.armed
	l.armed = nil
	return f
}

func (l *lockInjector) Watch(ctx context.Context, keys []string, fn backend.TxFunc) ([]backend.Reply, error) {
	return l.Client.Watch(ctx, keys, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
		cmds, err := fn(ctx, tx)
		if err == nil && len(cmds) > 0 {
			if f := l.take(); f != nil {
				f()
			}
		}
		return cmds, err
	})
}

// lockChangedBeforeExec changes a channel's locks between a transaction's
// reads and its EXEC (lockInjector), in both lock modes, and checks that
// the mutation is refused with ErrLocked and writes nothing: the
// transaction must have watched what it read of the locks, so that EXEC
// aborts and the retry sees the new lock. Strategies that run no
// transaction (a script) are not exposed to the window; their mutation
// simply runs before the change.
func (m *caser) lockChangedBeforeExec() {
	prefix := m.h.prefix()
	defer cleanup(m.c, prefix)
	other, err := m.h.serviceWith(m.c, prefix, m.clock.Now, nil)
	if err != nil {
		m.tb.Fatalf("presence.New: %v", err)
	}
	defer other.Close()
	inj := &lockInjector{Client: m.c}
	svcs := map[string]*presence.Service{}
	for _, mode := range []string{presence.LocksAdvisory, presence.LocksEnforced} {
		if mode == presence.LocksEnforced && !m.h.enforcedOK() {
			continue
		}
		svc, err := m.h.serviceLocks(inj, prefix, m.clock.Now, mode)
		if err != nil {
			m.tb.Fatalf("presence.New: %v", err)
		}
		defer svc.Close()
		svcs[mode] = svc
	}
	ch := chanIDs[1]
	keys := other.Keys()
	raw := func() map[string]string {
		r, err := m.c.Do(m.ctx(), backend.K("HGETALL", keys.Meta(ch.Type, ch.Name)))
		if err == nil {
			err = r[0].Error()
		}
		h, herr := r0Map(r, err)
		if herr != nil {
			m.tb.Fatalf("HGETALL: %v", herr)
		}
		return h
	}
	acquire := func(name, owner string) func() {
		return func() {
			if _, err := other.AcquireLock(m.ctx(), ch, name, owner, time.Minute); err != nil {
				m.tb.Fatalf("AcquireLock(%s, %s): %v", name, owner, err)
			}
		}
	}
	release := func(name, owner string) func() {
		return func() {
			if err := other.ReleaseLock(m.ctx(), ch, name, owner); err != nil {
				m.tb.Fatalf("ReleaseLock(%s, %s): %v", name, owner, err)
			}
		}
	}
	seq := func(fs ...func()) func() {
		return func() {
			for _, f := range fs {
				f()
			}
		}
	}
	injected := 0
	for _, c := range []struct {
		what, mode    string
		before, after func() // set up the locks; free them again
		change        func() // between the reads and EXEC
		actor, lock   string
	}{
		{"advisory: Set by u0 under its lock, which passes to u1", presence.LocksAdvisory,
			acquire(lockName, "u0"), release(lockName, "u1"),
			seq(release(lockName, "u0"), acquire(lockName, "u1")), "u0", lockName},
		{"enforced: Set by u1 on a free channel, which u0 locks", presence.LocksEnforced,
			func() {}, release(lockName, "u0"),
			acquire(lockName, "u0"), "u1", ""},
		{"enforced: Set by u0 under its lock while u1 takes another", presence.LocksEnforced,
			acquire(lockNames[0], "u0"), seq(release(lockNames[0], "u0"), release(lockNames[1], "u1")),
			acquire(lockNames[1], "u1"), "u0", lockNames[0]},
	} {
		if svcs[c.mode] == nil {
			continue // enforced locks: not run by this strategy
		}
		what := "lock changed before EXEC: " + c.what
		c.before()
		before := raw()
		inj.arm(c.change)
		m.ops++
		_, err := svcs[c.mode].SetMetadata(m.ctx(), ch, []presence.Item{item("a", c.what, -1)},
			presence.MetadataOptions{Actor: c.actor, LockName: c.lock})
		if inj.take() != nil {
			// No transaction reached EXEC: the write ran before the change.
			if err != nil {
				m.tb.Fatalf("%s, with no transaction to inject into: %v, want success", what, err)
			}
			c.change()
		} else {
			injected++
			if !errors.Is(err, presence.ErrLocked) {
				m.tb.Errorf("%s: %v, want ErrLocked: the transaction committed against a lock it did not see (its WATCH misses a lock key the write depends on)", what, err)
			} else if after := raw(); !maps.Equal(before, after) {
				m.tb.Errorf("%s failed with %v but changed the store:\nbefore %v\nafter  %v", what, err, before, after)
			}
		}
		c.after()
	}
	m.tb.Logf("cas: lock changed between the reads and EXEC of %d transactions", injected)
}

func r0Map(r []backend.Reply, err error) (map[string]string, error) {
	if err != nil {
		return nil, err
	}
	return r[0].AsStringMap()
}
