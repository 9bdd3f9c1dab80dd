package conformance

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence/core"

	"pgregory.net/rapid"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// checkMetadataSequential runs the metadata state machine: random sets,
// updates and removes with right, wrong and unchecked majorRevision and
// item revisions, unknown items, stamps, and mutations under a lock held
// by the actor, someone else or nobody, beside lock acquire, renew and
// release of two locks per channel; each case with advisory or enforced
// locks. A model predicts each result, and every channel's record and
// locks are compared with it after every step.
func checkMetadataSequential(tb rapid.TB, h *harness) {
	c := h.client()
	var cases, steps, enforcedCases atomic.Int64
	start := time.Now()
	rapid.Check(tb, func(t *rapid.T) {
		modes := []string{presence.LocksAdvisory, presence.LocksEnforced}
		if !h.enforcedOK() {
			modes = modes[:1]
		}
		locks := rapid.SampledFrom(modes).Draw(t, "locks")
		svc, clock, done := h.freshLocks(t, c, locks)
		defer done()
		if locks == presence.LocksEnforced {
			enforcedCases.Add(1)
		}
		m := &metadataMachine{h: h, svc: svc, clock: clock, enforced: locks == presence.LocksEnforced,
			chans: map[presence.Channel]*mChan{}, seen: map[presence.Channel]int64{}}
		for _, ch := range chanIDs {
			m.chans[ch] = &mChan{items: map[string]it{}}
		}
		t.Repeat(map[string]func(*rapid.T){
			"set":     m.set,
			"update":  m.update,
			"remove":  m.remove,
			"acquire": m.acquire,
			"renew":   m.renew,
			"release": m.release,
			"advance": m.advance,
			"":        m.check,
		})
		cases.Add(1)
		steps.Add(int64(m.steps))
	})
	tb.Logf("sequential: %d actions in %d cases (%d with enforced locks) in %v", steps.Load(), cases.Load(), enforcedCases.Load(), time.Since(start).Round(time.Millisecond))
}

// mChan is the model of one channel.
type mChan struct {
	major int64
	items map[string]it
	locks [numLocks]string // owners, "" when free
}

type metadataMachine struct {
	h        *harness
	svc      *presence.Service
	enforced bool // svc has Config.Locks "enforced"
	clock    *fakeClock
	chans    map[presence.Channel]*mChan
	seen     map[presence.Channel]int64 // highest majorRevision read
	steps    int
	checks   int
}

func (m *metadataMachine) ctx(t *rapid.T) context.Context {
	ctx, cancel := m.h.ctx()
	t.Cleanup(cancel)
	return ctx
}

func (m *metadataMachine) draw(t *rapid.T) (presence.Channel, *mChan) {
	ch := rapid.SampledFrom(chanIDs).Draw(t, "channel")
	return ch, m.chans[ch]
}

// drawOpts draws the options of a mutation and the errors they imply
// against mc, in the order strategies check them (any one of them is an
// acceptable answer).
func (m *metadataMachine) drawOpts(t *rapid.T, mc *mChan) (presence.MetadataOptions, []error) {
	var o presence.MetadataOptions
	var errs []error
	switch rapid.SampledFrom([]string{"unchecked", "right", "wrong"}).Draw(t, "majorRevision") {
	case "right":
		o.MajorRevision = presence.Rev(mc.major)
	case "wrong":
		o.MajorRevision = presence.Rev(max(0, mc.major+rapid.SampledFrom([]int64{-2, -1, 1, 2}).Draw(t, "majorOff")))
		if *o.MajorRevision != mc.major {
			errs = append(errs, presence.ErrConflict)
		}
	}
	o.Actor = rapid.SampledFrom([]string{"", "u0", "u1"}).Draw(t, "actor")
	locked := rapid.Bool().Draw(t, "locked")
	if locked {
		l := rapid.IntRange(0, numLocks-1).Draw(t, "lock")
		o.LockName = lockNames[l]
		if o.Actor == "" || mc.locks[l] != o.Actor {
			errs = append(errs, presence.ErrLocked)
		}
	}
	if m.enforced {
		for _, owner := range mc.locks {
			if owner != "" && (!locked || owner != o.Actor) {
				errs = append(errs, presence.ErrLocked)
			}
		}
	}
	o.AddTimestamp = rapid.Bool().Draw(t, "addTimestamp")
	o.AddUserID = o.Actor != "" && rapid.Bool().Draw(t, "addUserId")
	return o, errs
}

func (m *metadataMachine) stamp(e it, o presence.MetadataOptions) it {
	if o.AddTimestamp {
		e.updated = core.FormatMetaTime(m.clock.Ms())
	}
	if o.AddUserID {
		e.author = o.Actor
	}
	return e
}

// mutate runs a mutation and compares its result with the prediction:
// one of errs, or (when errs is empty) success with the record next.
func (m *metadataMachine) mutate(t *rapid.T, ch presence.Channel, mc *mChan, what string, errs []error, next *mChan,
	run func(ctx context.Context) (*presence.MetadataResponse, error)) {
	m.steps++
	r, err := run(m.ctx(t))
	if len(errs) > 0 {
		for _, e := range errs {
			if errors.Is(err, e) {
				return
			}
		}
		t.Fatalf("%s on %v = %v; want one of %v", what, rec{mc.major, mc.items}, err, errs)
	}
	if err != nil {
		t.Fatalf("%s on %v: %v", what, rec{mc.major, mc.items}, err)
	}
	want := rec{major: next.major, items: next.items}
	if got := fromResponse(r); !got.equal(want) {
		t.Fatalf("%s on %v returned %v, want %v", what, rec{mc.major, mc.items}, got, want)
	}
	mc.major, mc.items = next.major, next.items
}

func (m *metadataMachine) set(t *rapid.T) {
	ch, mc := m.draw(t)
	o, errs := m.drawOpts(t, mc)
	next := &mChan{major: mc.major + 1, items: map[string]it{}}
	var items []presence.Item
	for _, k := range rapid.Permutation(itemKeys).Draw(t, "order")[:rapid.IntRange(0, len(itemKeys)).Draw(t, "n")] {
		i := presence.Item{Key: k, Value: rapid.SampledFrom(metaVals).Draw(t, "value")}
		rev := int64(1)
		if rapid.Bool().Draw(t, "withRevision") {
			i.Revision = presence.Rev(rapid.Int64Range(0, 9).Draw(t, "revision"))
			rev = max(1, *i.Revision)
		}
		items = append(items, i)
		next.items[k] = m.stamp(it{val: i.Value, rev: rev}, o)
	}
	m.mutate(t, ch, mc, fmt.Sprintf("SetMetadata(%s, %s, %s)", ch.Name, showItems(items), showOpts(o)), errs, next,
		func(ctx context.Context) (*presence.MetadataResponse, error) {
			return m.svc.SetMetadata(ctx, ch, items, o)
		})
}

func (m *metadataMachine) update(t *rapid.T) {
	ch, mc := m.draw(t)
	o, errs := m.drawOpts(t, mc)
	next := &mChan{major: mc.major + 1, items: maps.Clone(mc.items)}
	var items []presence.Item
	for _, k := range rapid.Permutation(itemKeys).Draw(t, "order")[:rapid.IntRange(1, len(itemKeys)).Draw(t, "n")] {
		i := presence.Item{Key: k, Value: rapid.SampledFrom(metaVals).Draw(t, "value")}
		cur, ok := mc.items[k]
		switch rapid.SampledFrom([]string{"unchecked", "right", "wrong"}).Draw(t, "revision") {
		case "right":
			i.Revision = presence.Rev(cur.rev)
		case "wrong":
			i.Revision = presence.Rev(cur.rev + rapid.SampledFrom([]int64{-1, 1, 2}).Draw(t, "revOff"))
			if ok && *i.Revision != cur.rev {
				errs = append(errs, presence.ErrConflict)
			}
		}
		if !ok {
			errs = append(errs, presence.ErrInvalidArgument)
		}
		items = append(items, i)
		cur.val, cur.rev = i.Value, cur.rev+1
		next.items[k] = m.stamp(cur, o)
	}
	m.mutate(t, ch, mc, fmt.Sprintf("UpdateMetadata(%s, %s, %s)", ch.Name, showItems(items), showOpts(o)), errs, next,
		func(ctx context.Context) (*presence.MetadataResponse, error) {
			return m.svc.UpdateMetadata(ctx, ch, items, o)
		})
}

func (m *metadataMachine) remove(t *rapid.T) {
	ch, mc := m.draw(t)
	o, errs := m.drawOpts(t, mc)
	keys := rapid.Permutation(itemKeys).Draw(t, "order")[:rapid.IntRange(0, len(itemKeys)).Draw(t, "n")]
	next := &mChan{major: mc.major, items: maps.Clone(mc.items)}
	if len(keys) == 0 {
		clear(next.items)
	}
	for _, k := range keys {
		delete(next.items, k)
	}
	if len(next.items) != len(mc.items) {
		next.major++ // only a remove that removed something is a mutation
	}
	m.mutate(t, ch, mc, fmt.Sprintf("RemoveMetadata(%s, %v, %s)", ch.Name, keys, showOpts(o)), errs, next,
		func(ctx context.Context) (*presence.MetadataResponse, error) {
			return m.svc.RemoveMetadata(ctx, ch, keys, o)
		})
}

// drawLock draws a lock of a channel and an owner to act on it.
func (m *metadataMachine) drawLock(t *rapid.T) (ch presence.Channel, mc *mChan, l int, owner string) {
	ch, mc = m.draw(t)
	l = rapid.IntRange(0, numLocks-1).Draw(t, "lock")
	owner = rapid.SampledFrom(userIDs).Draw(t, "owner")
	m.steps++
	return ch, mc, l, owner
}

func (m *metadataMachine) acquire(t *rapid.T) {
	ch, mc, i, owner := m.drawLock(t)
	held := mc.locks[i]
	l, err := m.svc.AcquireLock(m.ctx(t), ch, lockNames[i], owner, time.Minute)
	if held != "" && held != owner {
		if !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("AcquireLock(%s, %s, %s) of %s's lock = %+v, %v; want ErrLocked", ch.Name, lockNames[i], owner, held, l, err)
		}
		return
	}
	if err != nil || l.Owner != owner {
		t.Fatalf("AcquireLock(%s, %s, %s) of a lock held by %q = %+v, %v", ch.Name, lockNames[i], owner, held, l, err)
	}
	mc.locks[i] = owner
}

func (m *metadataMachine) renew(t *rapid.T) {
	ch, mc, i, owner := m.drawLock(t)
	_, err := m.svc.RenewLock(m.ctx(t), ch, lockNames[i], owner, time.Minute)
	if held := mc.locks[i]; held != owner {
		if !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("RenewLock(%s, %s, %s) of a lock held by %q = %v; want ErrLocked", ch.Name, lockNames[i], owner, held, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("RenewLock(%s, %s, %s) of its own lock: %v", ch.Name, lockNames[i], owner, err)
	}
}

func (m *metadataMachine) release(t *rapid.T) {
	ch, mc, i, owner := m.drawLock(t)
	err := m.svc.ReleaseLock(m.ctx(t), ch, lockNames[i], owner)
	if held := mc.locks[i]; held != owner {
		if !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("ReleaseLock(%s, %s, %s) of a lock held by %q = %v; want ErrLocked", ch.Name, lockNames[i], owner, held, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("ReleaseLock(%s, %s, %s) of its own lock: %v", ch.Name, lockNames[i], owner, err)
	}
	mc.locks[i] = ""
}

func (m *metadataMachine) advance(t *rapid.T) {
	m.clock.Advance(time.Duration(rapid.Int64Range(1, 5000).Draw(t, "advanceMs")) * time.Millisecond)
}

// check compares every channel's record and lock with the model, read
// raw in one round trip, plus one channel through GetMetadata and GetLock
// (alternating); and that no majorRevision went down.
func (m *metadataMachine) check(t *rapid.T) {
	k := m.svc.Keys()
	var cmds []backend.Cmd
	const per = 1 + numLocks // replies per channel
	for _, ch := range chanIDs {
		cmds = append(cmds, backend.K("HGETALL", k.Meta(ch.Type, ch.Name)))
		for _, l := range lockNames {
			cmds = append(cmds, backend.K("GET", k.Lock(ch.Type, ch.Name, l)))
		}
	}
	r, err := m.svc.Client().Do(m.ctx(t), cmds...)
	if err == nil {
		err = backend.FirstError(r)
	}
	if err != nil {
		t.Fatalf("reading the channels: %v", err)
	}
	for i, ch := range chanIDs {
		rc, err := core.ParseMetaReply(r[per*i])
		if err != nil {
			t.Fatalf("channel %s: %v", ch.Name, err)
		}
		got := rec{major: rc.MajorRevision, items: map[string]it{}}
		for key, e := range rc.Items {
			got.items[key] = it{val: e.Value, rev: e.Revision, updated: e.Updated, author: e.Author}
		}
		var owners [numLocks]string
		for l := range lockNames {
			if g := r[per*i+1+l]; !g.IsNil() {
				owners[l], _ = g.AsString()
			}
		}
		m.compare(t, ch, "the meta hash", got, owners)
	}
	ch := chanIDs[m.checks%len(chanIDs)]
	m.checks++
	g, err := m.svc.GetMetadata(m.ctx(t), ch)
	if err != nil {
		t.Fatalf("GetMetadata(%s): %v", ch.Name, err)
	}
	if g.TotalCount != len(g.Metadata) {
		t.Fatalf("GetMetadata(%s).TotalCount = %d with %d items", ch.Name, g.TotalCount, len(g.Metadata))
	}
	var owners [numLocks]string
	for i, name := range lockNames {
		l, err := m.svc.GetLock(m.ctx(t), ch, name)
		if err != nil {
			t.Fatalf("GetLock(%s, %s): %v", ch.Name, name, err)
		}
		owners[i] = l.Owner
	}
	m.compare(t, ch, "GetMetadata and GetLock", fromResponse(g), owners)
}

func (m *metadataMachine) compare(t *rapid.T, ch presence.Channel, what string, got rec, owners [numLocks]string) {
	mc := m.chans[ch]
	if got.major < m.seen[ch] {
		t.Fatalf("%s: majorRevision of %s went from %d down to %d", what, ch.Name, m.seen[ch], got.major)
	}
	m.seen[ch] = got.major
	if want := (rec{major: mc.major, items: mc.items}); !got.equal(want) {
		t.Fatalf("%s: channel %s is %v, want %v", what, ch.Name, got, want)
	}
	if owners != mc.locks {
		t.Fatalf("%s: locks %v of %s are held by %q, want %q", what, lockNames, ch.Name, owners, mc.locks)
	}
}

func showItems(items []presence.Item) string {
	s := "["
	for i, it := range items {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%s=%q", it.Key, it.Value)
		if it.Revision != nil {
			s += fmt.Sprintf("@%d", *it.Revision)
		}
	}
	return s + "]"
}

func showOpts(o presence.MetadataOptions) string {
	s := "{"
	if o.MajorRevision != nil {
		s += fmt.Sprintf("major %d ", *o.MajorRevision)
	}
	if o.LockName != "" {
		s += "lock " + o.LockName + " "
	}
	if o.Actor != "" {
		s += "actor " + o.Actor + " "
	}
	if o.AddTimestamp {
		s += "+ts "
	}
	if o.AddUserID {
		s += "+uid "
	}
	return s + "}"
}
