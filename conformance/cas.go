package conformance

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence/core"

	"pgregory.net/rapid"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// caser runs the cas property: the metadata compare-and-set rules of
// docs/DESIGN.md §4 asserted directly, then a concurrent counter that loses no
// increment.
type caser struct {
	tb    rapid.TB
	h     *harness
	c     backend.Client
	svc   *presence.Service
	clock *fakeClock
	keys  core.Keys
	ops   int
}

func checkCAS(tb rapid.TB, h *harness) {
	c := h.client()
	svc, clock, done := h.fresh(tb, c)
	defer done()
	m := &caser{tb: tb, h: h, c: c, svc: svc, clock: clock, keys: svc.Keys()}
	start := time.Now()
	m.sequence()
	m.locks()
	m.enforcedLocks()
	m.fencingTokens()
	m.oneAttempt()
	m.lockChangedBeforeExec()
	m.events()
	m.concurrentIncrements()
	m.concurrentFencing()
	tb.Logf("cas: %d operations in %v", m.ops, time.Since(start).Round(time.Millisecond))
}

func (m *caser) ctx() context.Context {
	ctx, cancel := m.h.ctx()
	m.h.t.Cleanup(cancel)
	return ctx
}

// it is an item of an expected record.
type it struct {
	val     string
	rev     int64
	updated string
	author  string
}

// rec is an expected record.
type rec struct {
	major int64
	items map[string]it
}

func (r rec) String() string {
	keys := slices.Sorted(maps.Keys(r.items))
	var b strings.Builder
	fmt.Fprintf(&b, "{major %d", r.major)
	for _, k := range keys {
		e := r.items[k]
		fmt.Fprintf(&b, ", %s=%q@%d", k, e.val, e.rev)
		if e.updated != "" || e.author != "" {
			fmt.Fprintf(&b, "(%s %s)", e.updated, e.author)
		}
	}
	return b.String() + "}"
}

func fromResponse(r *presence.MetadataResponse) rec {
	out := rec{major: r.MajorRevision, items: map[string]it{}}
	for k, e := range r.Metadata {
		out.items[k] = it{val: e.Value, rev: e.Revision, updated: e.Updated, author: e.AuthorUID}
	}
	return out
}

func (r rec) equal(o rec) bool {
	return r.major == o.major && maps.Equal(r.items, o.items)
}

type mutation func(ctx context.Context) (*presence.MetadataResponse, error)

// ok runs a mutation that must succeed with the record want, and checks
// that Get then reads want too.
func (m *caser) ok(ch presence.Channel, what string, mu mutation, want rec) {
	m.tb.Helper()
	m.ops += 2
	r, err := mu(m.ctx())
	if err != nil {
		m.tb.Fatalf("%s: %v, want success with %v", what, err, want)
	}
	if got := fromResponse(r); !got.equal(want) {
		m.tb.Errorf("%s returned %v, want %v", what, got, want)
	}
	m.get(ch, what, want)
}

func (m *caser) get(ch presence.Channel, after string, want rec) {
	m.tb.Helper()
	g, err := m.svc.GetMetadata(m.ctx(), ch)
	if err != nil {
		m.tb.Fatalf("GetMetadata: %v", err)
	}
	if got := fromResponse(g); !got.equal(want) {
		m.tb.Errorf("after %s, GetMetadata = %v, want %v", after, got, want)
	}
}

// fails runs a mutation that must fail with one of wants and write
// nothing.
func (m *caser) fails(ch presence.Channel, what string, mu mutation, wants ...error) {
	m.tb.Helper()
	m.ops++
	before := m.rawMeta(ch)
	_, err := mu(m.ctx())
	match := false
	for _, w := range wants {
		match = match || errors.Is(err, w)
	}
	if !match {
		m.tb.Fatalf("%s = %v, want %v", what, err, wants)
	}
	if errors.Is(err, presence.ErrConflict) {
		m.conflictRecord(ch, what, err)
	}
	if after := m.rawMeta(ch); !maps.Equal(before, after) {
		m.tb.Errorf("%s failed with %v but changed the store:\nbefore %v\nafter  %v", what, err, before, after)
	}
}

func (m *caser) rawMeta(ch presence.Channel) map[string]string {
	m.tb.Helper()
	r, err := m.c.Do(m.ctx(), backend.K("HGETALL", m.keys.Meta(ch.Type, ch.Name)))
	if err == nil {
		err = r[0].Error()
	}
	if err != nil {
		m.tb.Fatalf("HGETALL: %v", err)
	}
	h, err := r[0].AsStringMap()
	if err != nil {
		m.tb.Fatalf("HGETALL: %v", err)
	}
	return h
}

func (m *caser) set(ch presence.Channel, items []presence.Item, o presence.MetadataOptions) mutation {
	return func(ctx context.Context) (*presence.MetadataResponse, error) {
		return m.svc.SetMetadata(ctx, ch, items, o)
	}
}

func (m *caser) update(ch presence.Channel, items []presence.Item, o presence.MetadataOptions) mutation {
	return func(ctx context.Context) (*presence.MetadataResponse, error) {
		return m.svc.UpdateMetadata(ctx, ch, items, o)
	}
}

func (m *caser) remove(ch presence.Channel, keys []string, o presence.MetadataOptions) mutation {
	return func(ctx context.Context) (*presence.MetadataResponse, error) {
		return m.svc.RemoveMetadata(ctx, ch, keys, o)
	}
}

func item(k, v string, rev int64) presence.Item {
	i := presence.Item{Key: k, Value: v}
	if rev >= 0 {
		i.Revision = presence.Rev(rev)
	}
	return i
}

func major(n int64) presence.MetadataOptions {
	return presence.MetadataOptions{MajorRevision: presence.Rev(n)}
}

var none presence.MetadataOptions

func (m *caser) sequence() {
	ch := chanIDs[0]
	m.get(ch, "nothing", rec{items: map[string]it{}})
	one := func(major int64, kv ...any) rec {
		r := rec{major: major, items: map[string]it{}}
		for i := 0; i < len(kv); i += 3 {
			r.items[kv[i].(string)] = it{val: kv[i+1].(string), rev: int64(kv[i+2].(int))}
		}
		return r
	}

	m.ok(ch, "Set(a=x, majorRevision 0)", m.set(ch, []presence.Item{item("a", "x", -1)}, major(0)), one(1, "a", "x", 1))
	m.fails(ch, "Set(b=y, majorRevision 0) after a set", m.set(ch, []presence.Item{item("b", "y", -1)}, major(0)), presence.ErrConflict)
	m.ok(ch, "Update(a=y, revision 1)", m.update(ch, []presence.Item{item("a", "y", 1)}, none), one(2, "a", "y", 2))
	m.fails(ch, "Update(a=z, revision 1) after revision 2", m.update(ch, []presence.Item{item("a", "z", 1)}, none), presence.ErrConflict)
	m.fails(ch, "Update(a=z, revision 2, majorRevision 1) at majorRevision 2", m.update(ch, []presence.Item{item("a", "z", 2)}, major(1)), presence.ErrConflict)
	m.fails(ch, "Update(b) of an unknown item", m.update(ch, []presence.Item{item("b", "z", -1)}, none), presence.ErrInvalidArgument)
	m.fails(ch, "Update(a right revision, b unknown)", m.update(ch, []presence.Item{item("a", "z", 2), item("b", "z", -1)}, none), presence.ErrInvalidArgument)
	m.fails(ch, "Update(b unknown, a right revision)", m.update(ch, []presence.Item{item("b", "z", -1), item("a", "z", 2)}, none), presence.ErrInvalidArgument)
	m.ok(ch, "Update(a=☃ unchecked, majorRevision 2)", m.update(ch, []presence.Item{item("a", "☃", -1)}, major(2)), one(3, "a", "☃", 3))
	m.ok(ch, "Remove(b) of an unknown item", m.remove(ch, []string{"b"}, none), one(3, "a", "☃", 3))
	m.ok(ch, "Set(a=p revision 7, b=\"\")", m.set(ch, []presence.Item{item("a", "p", 7), item("b", "", -1)}, none), one(4, "a", "p", 7, "b", "", 1))
	m.ok(ch, "Update(a, b)", m.update(ch, []presence.Item{item("a", "q", 7), item("b", "r", 1)}, major(4)), one(5, "a", "q", 8, "b", "r", 2))
	m.ok(ch, "Set(c=r) replacing a and b", m.set(ch, []presence.Item{item("c", "r", -1)}, major(5)), one(6, "c", "r", 1))
	m.ok(ch, "Remove() of everything", m.remove(ch, nil, major(6)), one(7))
	m.fails(ch, "Update(c) of a channel without items", m.update(ch, []presence.Item{item("c", "s", -1)}, none), presence.ErrInvalidArgument)
	m.ok(ch, "Remove() of nothing", m.remove(ch, nil, none), one(7))
	m.fails(ch, "Set(majorRevision 0) after remove-all: majorRevision never goes back", m.set(ch, nil, major(0)), presence.ErrConflict)
	m.ok(ch, "Set() of no items", m.set(ch, nil, major(7)), one(8))

	// Stamps: a set stamps fresh items; an update keeps the stamps
	// unless it stamps again.
	now1 := core.FormatMetaTime(m.clock.Ms())
	stamped := presence.MetadataOptions{AddTimestamp: true, AddUserID: true, Actor: "u0"}
	want := rec{major: 9, items: map[string]it{"a": {val: "x", rev: 1, updated: now1, author: "u0"}, "b": {val: "y", rev: 1, updated: now1, author: "u0"}}}
	m.ok(ch, "Set(a, b) stamped", m.set(ch, []presence.Item{item("a", "x", -1), item("b", "y", -1)}, stamped), want)
	want = rec{major: 10, items: map[string]it{"a": {val: "x2", rev: 2, updated: now1, author: "u0"}, "b": want.items["b"]}}
	m.ok(ch, "Update(a) unstamped", m.update(ch, []presence.Item{item("a", "x2", 1)}, none), want)
	m.clock.Advance(1234 * time.Millisecond)
	now2 := core.FormatMetaTime(m.clock.Ms())
	want = rec{major: 11, items: map[string]it{"a": want.items["a"], "b": {val: "y2", rev: 2, updated: now2, author: "u1"}}}
	m.ok(ch, "Update(b) stamped by u1", m.update(ch, []presence.Item{item("b", "y2", -1)},
		presence.MetadataOptions{AddTimestamp: true, AddUserID: true, Actor: "u1"}), want)
}

func (m *caser) lock(ch presence.Channel, what string, op func(ctx context.Context) error, want error) {
	m.tb.Helper()
	m.ops++
	err := op(m.ctx())
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		m.tb.Fatalf("%s = %v, want %v", what, err, want)
	}
}

func (m *caser) acquire(ch presence.Channel, owner string) func(context.Context) error {
	return func(ctx context.Context) error {
		l, err := m.svc.AcquireLock(ctx, ch, lockName, owner, time.Minute)
		if err == nil && l.Owner != owner {
			return fmt.Errorf("AcquireLock returned owner %q", l.Owner)
		}
		return err
	}
}

func (m *caser) release(ch presence.Channel, owner string) func(context.Context) error {
	return func(ctx context.Context) error { return m.svc.ReleaseLock(ctx, ch, lockName, owner) }
}

func (m *caser) wantOwner(ch presence.Channel, owner string) {
	m.tb.Helper()
	m.ops++
	l, err := m.svc.GetLock(m.ctx(), ch, lockName)
	if err != nil {
		m.tb.Fatalf("GetLock: %v", err)
	}
	if l.Owner != owner {
		m.tb.Errorf("GetLock owner = %q, want %q", l.Owner, owner)
	}
}

func (m *caser) locks() {
	ch := chanIDs[1]
	as := func(actor string) presence.MetadataOptions {
		return presence.MetadataOptions{LockName: lockName, Actor: actor}
	}
	m.lock(ch, "AcquireLock(u0)", m.acquire(ch, "u0"), nil)
	m.wantOwner(ch, "u0")
	m.lock(ch, "AcquireLock(u1) of u0's lock", m.acquire(ch, "u1"), presence.ErrLocked)
	m.lock(ch, "AcquireLock(u0) again", m.acquire(ch, "u0"), nil)
	m.fails(ch, "Set under u0's lock by u1", m.set(ch, []presence.Item{item("a", "x", -1)}, as("u1")), presence.ErrLocked)
	m.fails(ch, "Set under u0's lock by nobody", m.set(ch, []presence.Item{item("a", "x", -1)}, as("")), presence.ErrLocked)
	m.ok(ch, "Set under u0's lock by u0", m.set(ch, []presence.Item{item("a", "x", -1)}, as("u0")),
		rec{major: 1, items: map[string]it{"a": {val: "x", rev: 1}}})
	m.fails(ch, "Update under u0's lock by u1 with a wrong majorRevision", m.update(ch, []presence.Item{item("a", "y", -1)},
		presence.MetadataOptions{LockName: lockName, Actor: "u1", MajorRevision: presence.Rev(0)}), presence.ErrLocked, presence.ErrConflict)
	m.lock(ch, "ReleaseLock(u1) of u0's lock", m.release(ch, "u1"), presence.ErrLocked)
	m.wantOwner(ch, "u0")
	m.lock(ch, "ReleaseLock(u0)", m.release(ch, "u0"), nil)
	m.wantOwner(ch, "")
	m.lock(ch, "ReleaseLock(u0) of a free lock", m.release(ch, "u0"), presence.ErrLocked)
	m.fails(ch, "Set under a free lock", m.set(ch, []presence.Item{item("a", "y", -1)}, as("u0")), presence.ErrLocked)
	m.lock(ch, "AcquireLock(u1)", m.acquire(ch, "u1"), nil)
	m.ok(ch, "Update under u1's lock by u1", m.update(ch, []presence.Item{item("a", "y", 1)}, as("u1")),
		rec{major: 2, items: map[string]it{"a": {val: "y", rev: 2}}})
	m.fails(ch, "Remove under u1's lock by u0", m.remove(ch, nil, as("u0")), presence.ErrLocked)
	m.ok(ch, "Remove under u1's lock by u1", m.remove(ch, nil, as("u1")), rec{major: 3, items: map[string]it{}})
	m.lock(ch, "ReleaseLock(u1)", m.release(ch, "u1"), nil)
	m.wantOwner(ch, "")
}

// enforcedLocks checks Config.Locks "enforced" on a second service over
// the same keys: while a lock of the channel is held, only its holder
// naming a lock it holds writes; a second lock held by another bars the
// holder too; a released lock bars nobody. Follows locks(), on its
// channel (majorRevision 3, no items, no lock held).
func (m *caser) enforcedLocks() {
	if !m.h.enforcedOK() {
		return
	}
	ch := chanIDs[1]
	svc, err := m.h.serviceLocks(m.c, m.svc.Config().KeyPrefix, m.clock.Now, presence.LocksEnforced)
	if err != nil {
		m.tb.Fatalf("presence.New: %v", err)
	}
	defer svc.Close()
	set := func(actor, lock, v string) mutation {
		return func(ctx context.Context) (*presence.MetadataResponse, error) {
			return svc.SetMetadata(ctx, ch, []presence.Item{item("a", v, -1)}, presence.MetadataOptions{Actor: actor, LockName: lock})
		}
	}
	update := func(actor, lock, v string) mutation {
		return func(ctx context.Context) (*presence.MetadataResponse, error) {
			return svc.UpdateMetadata(ctx, ch, []presence.Item{item("a", v, -1)}, presence.MetadataOptions{Actor: actor, LockName: lock})
		}
	}
	remove := func(actor, lock string) mutation {
		return func(ctx context.Context) (*presence.MetadataResponse, error) {
			return svc.RemoveMetadata(ctx, ch, nil, presence.MetadataOptions{Actor: actor, LockName: lock})
		}
	}
	acquire := func(name, owner string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := svc.AcquireLock(ctx, ch, name, owner, time.Minute)
			return err
		}
	}
	release := func(name, owner string) func(context.Context) error {
		return func(ctx context.Context) error { return svc.ReleaseLock(ctx, ch, name, owner) }
	}
	one := func(major int64, v string, rev int64) rec {
		return rec{major: major, items: map[string]it{"a": {val: v, rev: rev}}}
	}
	m.ok(ch, "enforced: Set by u1 on a channel without locks", set("u1", "", "x"), one(4, "x", 1))
	m.lock(ch, "enforced: AcquireLock(L, u0)", acquire(lockNames[0], "u0"), nil)
	m.fails(ch, "enforced: Set by u1 without lockName under u0's lock", set("u1", "", "y"), presence.ErrLocked)
	m.fails(ch, "enforced: Update by u1 without lockName under u0's lock", update("u1", "", "y"), presence.ErrLocked)
	m.fails(ch, "enforced: Remove by u1 without lockName under u0's lock", remove("u1", ""), presence.ErrLocked)
	m.fails(ch, "enforced: Update by u1 naming u0's lock", update("u1", lockNames[0], "y"), presence.ErrLocked)
	m.fails(ch, "enforced: Update by nobody", update("", "", "y"), presence.ErrLocked)
	m.fails(ch, "enforced: Update by u0, the holder, without lockName", update("u0", "", "y"), presence.ErrLocked)
	m.ok(ch, "enforced: Update by u0 under its lock", update("u0", lockNames[0], "y"), one(5, "y", 2))
	m.lock(ch, "enforced: AcquireLock(M, u1)", acquire(lockNames[1], "u1"), nil)
	m.fails(ch, "enforced: Update by u0 under its lock while u1 holds another", update("u0", lockNames[0], "z"), presence.ErrLocked)
	m.fails(ch, "enforced: Update by u1 under its lock while u0 holds another", update("u1", lockNames[1], "z"), presence.ErrLocked)
	m.lock(ch, "enforced: ReleaseLock(L, u0)", release(lockNames[0], "u0"), nil)
	m.ok(ch, "enforced: Update by u1 under its lock, the only one held", update("u1", lockNames[1], "z"), one(6, "z", 3))
	m.lock(ch, "enforced: ReleaseLock(M, u1)", release(lockNames[1], "u1"), nil)
	m.ok(ch, "enforced: Remove by u0 after every lock was released", remove("u0", ""), rec{major: 7, items: map[string]it{}})
}

// events checks that each successful mutation publishes exactly one event
// with its majorRevision and a failed or empty one none. The remove at the
// end is published after everything before it on the channel.
func (m *caser) events() {
	ch := chanIDs[1]
	tb := m.tb
	var mu sync.Mutex
	var got []presence.MetadataEvent
	done := make(chan struct{})
	var once sync.Once
	// On a cluster, events of earlier mutations of this channel may cross
	// the cluster bus after SubscribeMetadata returned: ignore them by
	// their majorRevision, which the earlier mutations left at base.
	base := fromResponse(m.mustGet(ch)).major
	sub, err := m.svc.SubscribeMetadata(m.ctx(), func(e presence.MetadataEvent) {
		if e.ChannelType != ch.Type || e.ChannelName != ch.Name || e.MajorRevision <= base {
			return
		}
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
		if e.Operation == "remove" {
			once.Do(func() { close(done) })
		}
	})
	if err != nil {
		tb.Fatalf("SubscribeMetadata: %v", err)
	}
	defer sub.Close()
	m.ok(ch, "Set(a=1)", m.set(ch, []presence.Item{item("a", "1", -1)}, none), rec{major: base + 1, items: map[string]it{"a": {val: "1", rev: 1}}})
	m.fails(ch, "Update(a revision 5)", m.update(ch, []presence.Item{item("a", "2", 5)}, none), presence.ErrConflict)
	m.fails(ch, "Set(majorRevision wrong)", m.set(ch, nil, major(base)), presence.ErrConflict)
	m.ok(ch, "Update(a=2)", m.update(ch, []presence.Item{item("a", "2", 1)}, none), rec{major: base + 2, items: map[string]it{"a": {val: "2", rev: 2}}})
	m.ok(ch, "Remove(b) of nothing", m.remove(ch, []string{"b"}, none), rec{major: base + 2, items: map[string]it{"a": {val: "2", rev: 2}}})
	m.ok(ch, "Remove()", m.remove(ch, nil, none), rec{major: base + 3, items: map[string]it{}})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		tb.Fatalf("no remove event within 10s; events so far: %+v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	var seen []string
	for _, e := range got {
		seen = append(seen, e.Operation+"@"+strconv.FormatInt(e.MajorRevision, 10))
	}
	want := []string{"set@" + strconv.FormatInt(base+1, 10), "update@" + strconv.FormatInt(base+2, 10), "remove@" + strconv.FormatInt(base+3, 10)}
	if !slices.Equal(seen, want) {
		tb.Errorf("events of a set, two conflicts, an update, an empty remove and a remove: %v, want %v", seen, want)
		return
	}
	wantItems := []string{"a=1@1", "a=2@2", "a=2@2"}
	for i, e := range got {
		var s []string
		for _, x := range e.Items {
			s = append(s, fmt.Sprintf("%s=%s@%d", x.Key, x.Value, x.Revision))
		}
		if strings.Join(s, ",") != wantItems[i] {
			tb.Errorf("%s event carries items %v, want [%s]", e.Operation, s, wantItems[i])
		}
	}
}

func (m *caser) mustGet(ch presence.Channel) *presence.MetadataResponse {
	m.tb.Helper()
	m.ops++
	g, err := m.svc.GetMetadata(m.ctx(), ch)
	if err != nil {
		m.tb.Fatalf("GetMetadata: %v", err)
	}
	return g
}

// concurrentIncrements runs Options.Clients goroutines over Options.Nodes
// services, each reading a counter item and writing it plus one, guarded
// either by the item's revision (update) or by majorRevision (set, which
// carries the item's next revision so revisions never repeat). Every
// success must be an increment nobody else made: in the end the counter
// equals the number of successes, and majorRevision grew by exactly that
// many.
func (m *caser) concurrentIncrements() {
	ch := chanIDs[0]
	tb := m.tb
	start := fromResponse(m.mustSet(ch))
	svcs := m.nodes()
	var wins, ops, amb atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(m.h.opts.Duration)
	for i := range m.h.opts.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := svcs[i%len(svcs)]
			for n := 0; n < 60 && time.Now().Before(deadline); n++ {
				ctx, cancel := m.h.ctx()
				g, err := svc.GetMetadata(ctx, ch)
				ops.Add(1)
				if err != nil {
					cancel()
					continue
				}
				cur, ok := g.Metadata["a"]
				v, err := strconv.Atoi(cur.Value)
				if !ok || err != nil {
					cancel()
					tb.Errorf("the counter item is %+v (present %v)", cur, ok)
					return
				}
				next := strconv.Itoa(v + 1)
				if n%2 == 0 {
					_, err = svc.UpdateMetadata(ctx, ch, []presence.Item{item("a", next, cur.Revision)}, none)
				} else {
					_, err = svc.SetMetadata(ctx, ch, []presence.Item{item("a", next, cur.Revision+1)}, major(g.MajorRevision))
				}
				cancel()
				ops.Add(1)
				switch o, _ := classify(err); o {
				case outOK:
					wins.Add(1)
				case outConflict:
				case outAmbiguous: // it may or may not have counted
					amb.Add(1)
				default:
					tb.Errorf("increment: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	m.ops += int(ops.Load())
	end := m.mustGet(ch)
	n := wins.Load()
	counter, err := strconv.ParseInt(end.Metadata["a"].Value, 10, 64)
	if err != nil || counter < n || counter > n+amb.Load() || end.MajorRevision != start.major+counter {
		tb.Errorf("lost update: %d compare-and-set increments succeeded (and %d ended ambiguously), but the counter is %q and majorRevision went from %d to %d",
			n, amb.Load(), end.Metadata["a"].Value, start.major, end.MajorRevision)
	}
	if n == 0 {
		tb.Errorf("no compare-and-set increment succeeded among %d attempts", ops.Load()/2)
	}
}

// nodes returns m's service and more over the same keys, Options.Nodes
// in all, each on a client of its own, as several server nodes would be.
func (m *caser) nodes() []*presence.Service {
	svcs := []*presence.Service{m.svc}
	for len(svcs) < m.h.opts.Nodes {
		s, err := m.h.service(m.h.client(), m.svc.Config().KeyPrefix, m.clock.Now)
		if err != nil {
			m.tb.Fatalf("presence.New: %v", err)
		}
		m.h.t.Cleanup(func() { s.Close() })
		svcs = append(svcs, s)
	}
	return svcs
}

func (m *caser) mustSet(ch presence.Channel) *presence.MetadataResponse {
	m.tb.Helper()
	m.ops++
	r, err := m.svc.SetMetadata(m.ctx(), ch, []presence.Item{item("a", "0", -1)}, none)
	if err != nil {
		m.tb.Fatalf("SetMetadata: %v", err)
	}
	return r
}
