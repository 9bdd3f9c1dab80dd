package conformance

import (
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// Lock fencing tokens (docs/DESIGN.md §4, Locks), part of the cas
// property. The rule the model keeps: a token is handed out by an
// acquisition and is greater than every token of that lock before it; a
// write naming a token commits only while no newer token has been handed
// out, so no write carrying an older token commits after a newer one was
// handed out — a holder that resumes after its lock expired included.

// tokenAcquire acquires the lock for owner with ttl and returns its token,
// which must exceed last.
func (m *caser) tokenAcquire(ch presence.Channel, owner string, ttl time.Duration, last int64) int64 {
	m.tb.Helper()
	m.ops++
	l, err := m.svc.AcquireLock(m.ctx(), ch, lockName, owner, ttl)
	if err != nil {
		m.tb.Fatalf("AcquireLock(%s): %v", owner, err)
	}
	if l.FencingToken <= last {
		m.tb.Fatalf("AcquireLock(%s) handed out fencing token %d, not above the %d handed out before", owner, l.FencingToken, last)
	}
	return l.FencingToken
}

func fenced(actor string, token int64) presence.MetadataOptions {
	return presence.MetadataOptions{LockName: lockName, Actor: actor, FencingToken: token}
}

// fencingTokens asserts the token rules one step at a time. It runs on
// chanIDs[1] after locks() and enforcedLocks() (majorRevision 3 there, no
// items, no lock held).
func (m *caser) fencingTokens() {
	ch := chanIDs[1]
	base := m.mustGet(ch).MajorRevision
	r := func(n int64, v string, rev int64) rec {
		return rec{major: base + n, items: map[string]it{"f": {val: v, rev: rev}}}
	}
	t1 := m.tokenAcquire(ch, "u0", time.Minute, 0)
	m.ops++
	if l, err := m.svc.RenewLock(m.ctx(), ch, lockName, "u0", time.Minute); err != nil || l.FencingToken != t1 {
		m.tb.Fatalf("RenewLock kept fencing token %d? got %+v, %v", t1, l, err)
	}
	m.ok(ch, "Set under u0's token", m.set(ch, []presence.Item{item("f", "1", -1)}, fenced("u0", t1)), r(1, "1", 1))
	m.fails(ch, "Set under a token never handed out", m.set(ch, []presence.Item{item("f", "x", -1)}, fenced("u0", t1+1)), presence.ErrLocked)

	// u0's lock expires while u0 is paused; another process of u0 takes
	// the lock again: the paused one, resuming, holds an older token.
	t2 := m.tokenAcquire(ch, "u0", 30*time.Millisecond, t1)
	m.waitFree(ch)
	t3 := m.tokenAcquire(ch, "u0", time.Minute, t2)
	for _, stale := range []int64{t1, t2} {
		m.fails(ch, "Update under an older token of the lock's holder", m.update(ch, []presence.Item{item("f", "stale", -1)}, fenced("u0", stale)), presence.ErrLocked)
		m.fails(ch, "Remove under an older token of the lock's holder", m.remove(ch, nil, fenced("u0", stale)), presence.ErrLocked)
	}
	m.ok(ch, "Update under the newest token", m.update(ch, []presence.Item{item("f", "3", -1)}, fenced("u0", t3)), r(2, "3", 2))

	// Another owner's acquisition supersedes u0's token for u0 and is
	// the only one u1 writes under.
	m.lock(ch, "ReleaseLock(u0)", m.release(ch, "u0"), nil)
	t4 := m.tokenAcquire(ch, "u1", time.Minute, t3)
	m.fails(ch, "Update by u1 under u0's token", m.update(ch, []presence.Item{item("f", "x", -1)}, fenced("u1", t3)), presence.ErrLocked)
	m.ok(ch, "Update by u1 under its token", m.update(ch, []presence.Item{item("f", "4", -1)}, fenced("u1", t4)), r(3, "4", 3))

	// The token's key is gone, as after its expiry past the lock or a
	// loss of data: tokens still grow.
	m.lock(ch, "ReleaseLock(u1)", m.release(ch, "u1"), nil)
	m.ops++
	if _, err := m.c.Do(m.ctx(), backend.K("DEL", m.keys.Fence(ch.Type, ch.Name, lockName))); err != nil {
		m.tb.Fatalf("DEL: %v", err)
	}
	t5 := m.tokenAcquire(ch, "u1", time.Minute, t4)
	m.fails(ch, "Update under the token before the fence key was lost", m.update(ch, []presence.Item{item("f", "x", -1)}, fenced("u1", t4)), presence.ErrLocked)
	m.ok(ch, "Update under the token after", m.update(ch, []presence.Item{item("f", "5", -1)}, fenced("u1", t5)), r(4, "5", 4))
	m.lock(ch, "ReleaseLock(u1)", m.release(ch, "u1"), nil)
}

// waitFree waits for the lock to expire (real Redis TTLs: the fake clock
// moves Config.Now only).
func (m *caser) waitFree(ch presence.Channel) {
	m.tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.ops++
		l, err := m.svc.GetLock(m.ctx(), ch, lockName)
		if err != nil {
			m.tb.Fatalf("GetLock: %v", err)
		}
		if !l.Held() {
			return
		}
		if time.Now().After(deadline) {
			m.tb.Fatalf("a 30ms lock is still held after 10s: %+v", l)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// concurrentFencing runs Options.Clients goroutines over Options.Nodes
// services, all for one owner (several processes of one user), each
// acquiring the lock and then writing its token under it. Each commit
// bumps majorRevision, which orders the commits; a write whose token is
// below that of a commit before it committed after a newer token was
// handed out (the newer commit's acquisition preceded its commit).
func (m *caser) concurrentFencing() {
	ch := chanIDs[1]
	tb := m.tb
	svcs := m.nodes()
	type commit struct{ major, token int64 }
	var (
		mu      sync.Mutex
		commits []commit
		ops     atomic.Int64
		refused atomic.Int64
		wg      sync.WaitGroup
	)
	deadline := time.Now().Add(m.h.opts.Duration)
	for i := range m.h.opts.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := svcs[i%len(svcs)]
			for n := 0; n < 40 && time.Now().Before(deadline); n++ {
				ctx, cancel := m.h.ctx()
				l, err := svc.AcquireLock(ctx, ch, lockName, "u0", time.Minute)
				ops.Add(1)
				if err != nil {
					cancel()
					if o, bad := classify(err); bad || o != outAmbiguous {
						tb.Errorf("AcquireLock: %v", err)
						return
					}
					continue
				}
				r, err := svc.SetMetadata(ctx, ch, []presence.Item{item("f", "w", -1)}, fenced("u0", l.FencingToken))
				cancel()
				ops.Add(1)
				switch o, _ := classify(err); o {
				case outOK:
					mu.Lock()
					commits = append(commits, commit{r.MajorRevision, l.FencingToken})
					mu.Unlock()
				case outLocked:
					refused.Add(1)
				case outAmbiguous:
				default:
					tb.Errorf("fenced write: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	m.ops += int(ops.Load())
	sort.Slice(commits, func(i, j int) bool { return commits[i].major < commits[j].major })
	for i := 1; i < len(commits); i++ {
		if p, c := commits[i-1], commits[i]; c.token < p.token {
			tb.Errorf("a write under fencing token %d committed (majorRevision %d) after a write under the newer token %d (majorRevision %d)",
				c.token, c.major, p.token, p.major)
			break
		}
	}
	// Few commits are legitimate: under contention most tokens are
	// superseded before their write (the sequential part asserts that a
	// current token's write succeeds), so this is logged, not failed.
	tb.Logf("fencing: %d fenced writes committed, %d refused as superseded", len(commits), refused.Load())
	if err := m.svc.ReleaseLock(m.ctx(), ch, lockName, "u0"); err != nil && !errors.Is(err, presence.ErrLocked) {
		tb.Fatalf("ReleaseLock: %v", err)
	}
}

// conflictRecord checks a conflict's record: the refused mutation's
// *presence.ConflictError carries the record as it is (the store is
// unchanged by the refusal, so a GetMetadata reads the same).
func (m *caser) conflictRecord(ch presence.Channel, what string, err error) {
	m.tb.Helper()
	var ce *presence.ConflictError
	if !errors.As(err, &ce) || ce.Current == nil {
		m.tb.Fatalf("%s = %v: a conflict without the record it lost to (want a *presence.ConflictError)", what, err)
	}
	g, gerr := m.svc.GetMetadata(m.ctx(), ch)
	if gerr != nil {
		m.tb.Fatalf("GetMetadata: %v", gerr)
	}
	if got, want := fromResponse(ce.Current), fromResponse(g); !got.equal(want) {
		m.tb.Errorf("%s: the conflict carries %v, but the record is %v", what, got, want)
	}
}
