package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence/core"

	"pgregory.net/rapid"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// fencer runs the fencing property: docs/DESIGN.md §4's invariants 1–3 asserted
// directly, step by step, then under concurrency.
type fencer struct {
	tb    rapid.TB
	h     *harness
	c     backend.Client
	svc   *presence.Service
	clock *fakeClock
	keys  core.Keys
	ops   int
	// written is the clock when the last successful join or heartbeat
	// ran: the last_seen the store must show.
	written int64
}

func checkFencing(tb rapid.TB, h *harness) {
	c := h.client()
	svc, clock, done := h.fresh(tb, c)
	defer done()
	f := &fencer{tb: tb, h: h, c: c, svc: svc, clock: clock, keys: svc.Keys()}
	start := time.Now()
	f.sequence()
	f.events()
	f.concurrentHeartbeats()
	f.concurrentRejoins()
	tb.Logf("fencing: %d operations in %v", f.ops, time.Since(start).Round(time.Millisecond))
}

func (f *fencer) ctx() context.Context {
	ctx, cancel := f.h.ctx()
	f.h.t.Cleanup(cancel)
	return ctx
}

func (f *fencer) join(room, conn, state string) int64 {
	f.tb.Helper()
	f.ops++
	before := f.clock.Ms()
	f.written = before
	j, err := f.svc.Join(f.ctx(), room, conn, "u0", json.RawMessage(state))
	if err != nil {
		f.tb.Fatalf("Join(%s, %s): %v", room, conn, err)
	}
	if j.Epoch < before {
		f.tb.Errorf("Join(%s, %s) at now=%d returned epoch %d: the new epoch is max(previous + 1, now)", room, conn, before, j.Epoch)
	}
	return j.Epoch
}

func (f *fencer) hb(room, conn string, epoch *int64, patch string) (presence.HeartbeatResult, error) {
	f.ops++
	var p json.RawMessage
	if patch != "" {
		p = json.RawMessage(patch)
	}
	return f.svc.Heartbeat(f.ctx(), room, conn, presence.HeartbeatParams{Epoch: epoch, PatchState: p})
}

// hbOK runs a heartbeat that must succeed with the given epoch and
// changed flag.
func (f *fencer) hbOK(room, conn string, epoch *int64, patch string, wantEpoch int64, wantChanged bool) {
	f.tb.Helper()
	f.written = f.clock.Ms()
	r, err := f.hb(room, conn, epoch, patch)
	if err != nil {
		f.tb.Fatalf("Heartbeat(%s, epoch %s, patch %s): %v, want success", conn, showEpoch(epoch), patch, err)
	}
	if r.Epoch != wantEpoch || r.Changed != wantChanged {
		f.tb.Errorf("Heartbeat(%s, epoch %s, patch %s) = {Epoch: %d, Changed: %v}, want {Epoch: %d, Changed: %v}",
			conn, showEpoch(epoch), patch, r.Epoch, r.Changed, wantEpoch, wantChanged)
	}
}

// hbFails runs a heartbeat that must fail with want and change nothing:
// not the conn hash, its TTL, conn_meta, the reaper's index, membership.
func (f *fencer) hbFails(room, conn string, epoch *int64, patch string, want error) {
	f.tb.Helper()
	f.pexpire(room, conn, 10*time.Minute) // a refresh would bring the TTL down to Config.TTL
	f.clock.Advance(1500 * time.Millisecond)
	before := f.raw(room, conn)
	_, err := f.hb(room, conn, epoch, patch)
	if !errors.Is(err, want) {
		f.tb.Fatalf("Heartbeat(%s, epoch %s, patch %s) = %v, want %v", conn, showEpoch(epoch), patch, err, want)
	}
	after := f.raw(room, conn)
	if !before.equal(after) {
		f.tb.Errorf("Heartbeat(%s, epoch %s, patch %s) failed with %v but changed the store:\nbefore %+v\nafter  %+v",
			conn, showEpoch(epoch), patch, err, before, after)
	}
	if before.exists && after.pttl <= f.svc.Config().TTL.Milliseconds() {
		f.tb.Errorf("Heartbeat(%s, epoch %s) failed with %v but refreshed the conn's TTL (PTTL %dms)", conn, showEpoch(epoch), err, after.pttl)
	}
}

func showEpoch(e *int64) string {
	if e == nil {
		return "none"
	}
	return strconv.FormatInt(*e, 10)
}

func (f *fencer) pexpire(room, conn string, d time.Duration) {
	f.do(backend.K("PEXPIRE", f.keys.Conn(room, conn), strconv.FormatInt(d.Milliseconds(), 10)))
}

func (f *fencer) do(cmds ...backend.Cmd) []backend.Reply {
	f.tb.Helper()
	r, err := f.c.Do(f.ctx(), cmds...)
	if err == nil {
		err = backend.FirstError(r)
	}
	if err != nil {
		f.tb.Fatalf("%s: %v", cmds[0].Name, err)
	}
	return r
}

// expire deletes the conn hash, as its TTL running out would.
func (f *fencer) expire(room, conn string) {
	f.do(backend.K("DEL", f.keys.Conn(room, conn)))
}

// rawConn is everything of one conn in the store.
type rawConn struct {
	exists   bool
	hash     map[string]string
	meta     string // conn_meta entry
	lastSeen string // score in the reaper's index
	inRoom   bool
	pttl     int64
}

func (a rawConn) equal(b rawConn) bool {
	return a.exists == b.exists && maps.Equal(a.hash, b.hash) && a.meta == b.meta && a.lastSeen == b.lastSeen && a.inRoom == b.inRoom
}

func (f *fencer) raw(room, conn string) rawConn {
	f.tb.Helper()
	r, err := readRaw(f.ctx(), f.c, f.keys, room, conn)
	if err != nil {
		f.tb.Fatalf("reading conn %s: %v", conn, err)
	}
	return r
}

// readRaw reads everything of one conn in one round trip.
func readRaw(ctx context.Context, c backend.Client, k core.Keys, room, conn string) (rawConn, error) {
	r, err := c.Do(ctx,
		backend.K("HGETALL", k.Conn(room, conn)),
		backend.K("HGET", k.ConnMeta(room), conn),
		backend.K("ZSCORE", k.LastSeen(room), conn),
		backend.K("SISMEMBER", k.Conns(room), conn),
		backend.K("PTTL", k.Conn(room, conn)),
	)
	if err == nil {
		err = backend.FirstError(r)
	}
	if err != nil {
		return rawConn{}, err
	}
	h, err := r[0].AsStringMap()
	if err != nil {
		return rawConn{}, err
	}
	meta, _ := r[1].AsString()
	seen, _ := r[2].AsString()
	in, _ := r[3].AsInt()
	pttl, _ := r[4].AsInt()
	return rawConn{exists: len(h) > 0, hash: h, meta: meta, lastSeen: seen, inRoom: in == 1, pttl: pttl}, nil
}

// entry returns conn's snapshot entry, failing when it is missing.
func (f *fencer) entry(room, conn string) presence.Entry {
	f.tb.Helper()
	f.ops++
	snap, err := f.svc.Snapshot(f.ctx(), room)
	if err != nil {
		f.tb.Fatalf("Snapshot(%s): %v", room, err)
	}
	for _, e := range snap {
		if e.ConnID == conn {
			return e
		}
	}
	f.tb.Fatalf("Snapshot(%s) has no entry for %s: %+v", room, conn, snap)
	return presence.Entry{}
}

func (f *fencer) wantEntry(room, conn string, epoch int64, state string, lastSeen int64) {
	f.tb.Helper()
	e := f.entry(room, conn)
	if e.Epoch != epoch || !sameJSONObject(e.State, state) || e.LastSeenMs != lastSeen {
		f.tb.Errorf("Snapshot entry of %s = {Epoch: %d, State: %s, LastSeenMs: %d}, want {Epoch: %d, State: %s, LastSeenMs: %d}",
			conn, e.Epoch, e.State, e.LastSeenMs, epoch, state, lastSeen)
	}
}

func (f *fencer) exists(room, conn string) bool {
	n, _ := f.do(backend.K("EXISTS", f.keys.Conn(room, conn)))[0].AsInt()
	return n == 1
}

func ptr(n int64) *int64 { return &n }

// sequence walks a conn through every fencing case once.
func (f *fencer) sequence() {
	const room, conn = "r0", "c0"
	tb := f.tb
	lookback := f.svc.Config().ReaperLookback

	e1 := f.join(room, conn, `{"k0":1}`)
	f.wantEntry(room, conn, e1, `{"k0":1}`, f.written)

	// Invariant 2: a stale heartbeat fails and writes nothing.
	f.hbFails(room, conn, ptr(e1-1), `{"k0":2}`, presence.ErrStaleEpoch)
	f.hbFails(room, conn, ptr(0), "", presence.ErrStaleEpoch)

	// Equal epoch: applied; the patch changes the state once.
	f.pexpire(room, conn, 10*time.Minute)
	f.hbOK(room, conn, ptr(e1), `{"k0":2}`, e1, true)
	if r := f.raw(room, conn); r.pttl > f.svc.Config().TTL.Milliseconds() {
		tb.Errorf("a heartbeat did not refresh the conn's TTL: PTTL %dms, TTL %v", r.pttl, f.svc.Config().TTL)
	}
	f.hbOK(room, conn, ptr(e1), `{"k0":2}`, e1, false)
	f.wantEntry(room, conn, e1, `{"k0":2}`, f.written)

	// A higher epoch is adopted; below it is now stale.
	f.clock.Advance(time.Second)
	f.hbOK(room, conn, ptr(e1+10), `{"k1":"x"}`, e1+10, true)
	f.wantEntry(room, conn, e1+10, `{"k0":2,"k1":"x"}`, f.written)
	f.hbFails(room, conn, ptr(e1+5), `{"k1":"y"}`, presence.ErrStaleEpoch)
	f.hbFails(room, conn, ptr(e1+9), "", presence.ErrStaleEpoch)
	f.hbOK(room, conn, nil, "", e1+10, false)
	f.hbOK(room, conn, nil, `{"k2":null}`, e1+10, true)

	// Invariant 3 after expiry: conn_meta followed the adopted epoch.
	f.expire(room, conn)
	f.hbFails(room, conn, ptr(e1+10), `{"k0":3}`, presence.ErrConnNotFound)
	f.hbFails(room, conn, nil, "", presence.ErrConnNotFound)
	if f.exists(room, conn) {
		tb.Errorf("a heartbeat of an expired conn recreated its hash")
	}
	e2 := f.join(room, conn, `{}`)
	if e2 <= e1+10 {
		tb.Errorf("rejoin after expiry returned epoch %d, not above the stored %d", e2, e1+10)
	}
	// The old connection's epoch is stale for the new one.
	f.hbFails(room, conn, ptr(e1+10), `{"k0":"old"}`, presence.ErrStaleEpoch)
	f.wantEntry(room, conn, e2, `{}`, f.written)

	// After leave.
	f.ops++
	if err := f.svc.Leave(f.ctx(), room, conn); err != nil {
		tb.Fatalf("Leave: %v", err)
	}
	f.hbFails(room, conn, ptr(e2), `{"k0":1}`, presence.ErrConnNotFound)
	e3 := f.join(room, conn, `{"k0":1}`)
	if e3 <= e2 {
		tb.Errorf("rejoin after leave returned epoch %d, not above %d", e3, e2)
	}

	// After expiry and reaping, with an adopted epoch far above the clock.
	high := e3 + 1_000_000
	f.hbOK(room, conn, ptr(high), "", high, false)
	f.expire(room, conn)
	f.clock.Advance(lookback + time.Second)
	if n := f.reap(); n < 1 {
		tb.Errorf("Reap removed %d conns, want the expired %s", n, conn)
	}
	if f.raw(room, conn).inRoom {
		tb.Errorf("Reap left the expired %s in the room", conn)
	}
	e4 := f.join(room, conn, `{}`)
	if e4 <= high {
		tb.Errorf("rejoin after reaping returned epoch %d, not above the adopted %d", e4, high)
	}

	// The reaper spares a conn whose heartbeat came after the lookback
	// began, even when its hash is gone: the heartbeat refreshed the index.
	f.clock.Advance(lookback + time.Second)
	f.hbOK(room, conn, nil, "", e4, false)
	f.expire(room, conn)
	f.reap()
	if !f.raw(room, conn).inRoom {
		tb.Errorf("Reap removed %s although it heartbeated at now=%d (cutoff now-lookback): the heartbeat did not refresh the reaper's index", conn, f.clock.Ms())
	}
	e5 := f.join(room, conn, `{}`)
	if e5 <= e4 {
		tb.Errorf("rejoin returned epoch %d, not above %d", e5, e4)
	}

	// Long after a leave, once the reaper pruned what it remembered.
	f.ops++
	if err := f.svc.Leave(f.ctx(), room, conn); err != nil {
		tb.Fatalf("Leave: %v", err)
	}
	f.join(room, "c1", `{}`) // keeps the room active, so the reaper visits it
	f.clock.Advance(3*lookback + time.Second)
	f.reap()
	if e6 := f.join(room, conn, `{}`); e6 <= e5 {
		tb.Errorf("rejoin long after leave returned epoch %d, not above %d", e6, e5)
	}

	// A client's epoch may lead the clock by EpochLead at most: beyond is
	// refused and changes nothing, up to it is adopted.
	// (hbFails moves the clock on before its heartbeat.)
	f.hbFails(room, conn, ptr(presence.MaxEpoch-100), "", presence.ErrInvalidArgument)
	f.hbFails(room, conn, ptr(f.clock.Ms()+2*presence.EpochLead.Milliseconds()), "", presence.ErrInvalidArgument)
	top := f.clock.Ms() + presence.EpochLead.Milliseconds()
	f.hbOK(room, conn, ptr(top), "", top, false)
	if e7 := f.join(room, conn, `{}`); e7 <= top {
		tb.Errorf("rejoin returned epoch %d, not above the adopted %d", e7, top)
	}

	// An unknown conn.
	f.hbFails(room, "c2", ptr(e1), `{"k0":1}`, presence.ErrConnNotFound)
	if r := f.raw(room, "c2"); r.exists || r.inRoom || r.meta != "" || r.lastSeen != "" {
		tb.Errorf("a heartbeat of an unknown conn wrote %+v", r)
	}
	for _, c := range []string{conn, "c1"} {
		f.ops++
		if err := f.svc.Leave(f.ctx(), room, c); err != nil {
			tb.Fatalf("Leave: %v", err)
		}
	}
}

func (f *fencer) reap() int {
	f.tb.Helper()
	f.ops++
	n, err := f.svc.Reap(f.ctx())
	if err != nil {
		f.tb.Fatalf("Reap: %v", err)
	}
	return n
}

// events checks that a heartbeat publishes an update iff the state
// changed, and nothing when it fails. The leave at the end is published
// after everything before it on the room's channel, so once it arrived
// every event that was going to arrive has.
func (f *fencer) events() {
	const room, conn = "r1", "c2"
	tb := f.tb
	var mu sync.Mutex
	var got []presence.Event
	done := make(chan struct{})
	var once sync.Once
	// On a cluster, events of this conn's earlier life may cross the
	// cluster bus after Subscribe returned; they carry epochs below the
	// join's, which is strictly greater than any before it.
	var joined atomic.Int64
	joined.Store(math.MaxInt64)
	sub, err := observe(f.ctx(), f.svc, []string{room}, nil, func(e presence.Event) {
		if e.RoomID != room || e.ConnID != conn {
			return
		}
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
		if e.Type == "leave" && e.Epoch >= joined.Load() {
			once.Do(func() { close(done) })
		}
	}, nil)
	if err != nil {
		tb.Fatalf("observe: %v", err)
	}
	defer sub.Close()
	e := f.join(room, conn, `{"k0":1}`)
	joined.Store(e)
	f.hbOK(room, conn, ptr(e), `{"k0":2,"k1":"x"}`, e, true)
	f.hbOK(room, conn, ptr(e), `{"k0":2}`, e, false)
	f.hbOK(room, conn, nil, "", e, false)
	f.hbFails(room, conn, ptr(e-1), `{"k0":3}`, presence.ErrStaleEpoch)
	f.ops++
	if err := f.svc.Leave(f.ctx(), room, conn); err != nil {
		tb.Fatalf("Leave: %v", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		tb.Fatalf("no leave event within 10s; events so far: %+v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	got = slices.DeleteFunc(got, func(ev presence.Event) bool { return ev.Epoch < e })
	var types []string
	for _, ev := range got {
		types = append(types, ev.Type)
	}
	if !slices.Equal(types, []string{"join", "update", "leave"}) {
		tb.Errorf("events of a join, a changing heartbeat, two unchanging ones, a stale one and a leave: %v, want [join update leave]", types)
		return
	}
	if up := got[1]; up.Epoch != e || !sameJSONObject(up.State, `{"k0":2,"k1":"x"}`) || up.UserID != "u0" {
		tb.Errorf("update event %+v, want epoch %d, user u0, state {\"k0\":2,\"k1\":\"x\"}", up, e)
	}
}

// concurrentHeartbeats races heartbeats with random higher epochs from
// Options.Clients goroutines over Options.Nodes services, while a monitor
// reads the stored epoch: it must never decrease (invariant 1), and at the
// end it must be the highest epoch any successful heartbeat sent.
func (f *fencer) concurrentHeartbeats() {
	const room, conn = "r0", "c1"
	tb := f.tb
	base := f.join(room, conn, `{}`)
	svcs := f.services()
	var (
		highest  atomic.Int64
		ops, amb atomic.Int64
		stop     = make(chan struct{})
		wg, mon  sync.WaitGroup
		deadline = time.Now().Add(f.h.opts.Duration)
	)
	highest.Store(base)
	mon.Add(1)
	go func() { // the monitor
		defer mon.Done()
		last := base
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := f.h.ctx()
			r, err := f.c.Do(ctx, backend.K("HGET", f.keys.Conn(room, conn), "epoch"))
			cancel()
			if err != nil {
				continue
			}
			s, _ := r[0].AsString()
			e, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				tb.Errorf("stored epoch %q of a live conn is not an integer", s)
				return
			}
			if e < last {
				tb.Errorf("invariant 1: the stored epoch went from %d down to %d under concurrent heartbeats", last, e)
				return
			}
			last = e
		}
	}()
	for i := range f.h.opts.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := svcs[i%len(svcs)]
			key := svc.Keys().Conn(room, conn)
			for n := int64(0); n < 100 && time.Now().Before(deadline); n++ {
				// Epochs climb with n, so many heartbeats are above the
				// stored epoch and race each other to write it.
				e := base + 1 + 4*n + rand.Int64N(16)
				ctx, cancel := f.h.ctx()
				r, err := svc.Heartbeat(ctx, room, conn, presence.HeartbeatParams{Epoch: &e})
				ops.Add(1)
				switch {
				case err == nil:
					if r.Epoch < e {
						tb.Errorf("Heartbeat(epoch %d) succeeded with epoch %d, below its own", e, r.Epoch)
					}
					for h := highest.Load(); e > h && !highest.CompareAndSwap(h, e); h = highest.Load() {
					}
					// Having succeeded with e, the stored epoch is at
					// least e from now on.
					if g, err := svc.Client().Do(ctx, backend.K("HGET", key, "epoch")); err == nil {
						ops.Add(1)
						if s, _ := g[0].AsString(); s != "" {
							if got, _ := strconv.ParseInt(s, 10, 64); got < e {
								tb.Errorf("invariant 1: a heartbeat with epoch %d succeeded, then the stored epoch read %d", e, got)
							}
						}
					}
				case errors.Is(err, presence.ErrStaleEpoch):
				default:
					if o, _ := classify(err); o != outAmbiguous {
						tb.Errorf("Heartbeat(epoch %d) of a live conn: %v", e, err)
					}
					amb.Add(1)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	close(stop)
	mon.Wait()
	f.ops += int(ops.Load())
	// A heartbeat that ended ambiguously may have raised it further.
	if e := f.entry(room, conn).Epoch; e < highest.Load() || e > highest.Load() && amb.Load() == 0 {
		tb.Errorf("invariant 1: after concurrent heartbeats the stored epoch is %d, but the highest epoch of a successful heartbeat is %d", e, highest.Load())
	}
}

// concurrentRejoins races joins of one conn: each must return an epoch
// above every epoch returned before it completed, so they are all
// distinct, and the stored epoch is the highest.
func (f *fencer) concurrentRejoins() {
	const room, conn = "r1", "c0"
	tb := f.tb
	svcs := f.services()
	var mu sync.Mutex
	var all []int64
	var amb atomic.Int64
	var wg sync.WaitGroup
	for i := range f.h.opts.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := svcs[i%len(svcs)]
			last := int64(-1)
			for range 10 {
				ctx, cancel := f.h.ctx()
				j, err := svc.Join(ctx, room, conn, userIDs[i%2], nil)
				cancel()
				if err != nil {
					if o, _ := classify(err); o != outAmbiguous {
						tb.Errorf("Join: %v", err)
					}
					amb.Add(1)
					continue
				}
				if j.Epoch <= last {
					tb.Errorf("invariant 3: a client's rejoin returned epoch %d after its previous rejoin returned %d", j.Epoch, last)
				}
				last = j.Epoch
				mu.Lock()
				all = append(all, j.Epoch)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	f.ops += len(all)
	slices.Sort(all)
	for i := 1; i < len(all); i++ {
		if all[i] == all[i-1] {
			tb.Errorf("invariant 3: two concurrent rejoins of one conn both returned epoch %d", all[i])
			break
		}
	}
	if len(all) > 0 {
		if e := f.entry(room, conn).Epoch; e < all[len(all)-1] || e > all[len(all)-1] && amb.Load() == 0 {
			tb.Errorf("after concurrent rejoins the stored epoch is %d, want the highest returned, %d", e, all[len(all)-1])
		}
	}
}

// services returns f.svc plus one service per extra node, each on its
// own client, with the same prefix and clock.
func (f *fencer) services() []*presence.Service {
	out := []*presence.Service{f.svc}
	for len(out) < f.h.opts.Nodes {
		s, err := f.h.service(f.h.client(), f.svc.Config().KeyPrefix, f.clock.Now)
		if err != nil {
			f.tb.Fatalf("presence.New: %v", err)
		}
		f.h.t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out
}

// sameJSONObject reports whether got is the JSON object want, comparing
// each top-level value byte for byte (values are canonical).
func sameJSONObject(got json.RawMessage, want string) bool {
	var a, b map[string]json.RawMessage
	if json.Unmarshal(got, &a) != nil || json.Unmarshal([]byte(want), &b) != nil || a == nil || b == nil {
		return false
	}
	return maps.EqualFunc(a, b, func(x, y json.RawMessage) bool { return string(x) == string(y) })
}
