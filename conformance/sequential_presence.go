package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence/core"

	"pgregory.net/rapid"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// checkPresenceSequential runs the presence state machine: random joins,
// rejoins, heartbeats with stale, equal, higher and absent epochs and
// state patches, leaves, expiries (the conn hash deleted as its TTL would)
// and reaper passes on a fake clock. A model predicts each result, and
// the store is compared with it after every step, together with the
// fencing invariants.
func checkPresenceSequential(tb rapid.TB, h *harness) {
	c := h.client()
	var cases, steps atomic.Int64
	start := time.Now()
	rapid.Check(tb, func(t *rapid.T) {
		svcs, nodes, clock, done := h.freshNodes(t, c, numNodes)
		defer done()
		svc := svcs[0]
		// Near the epoch, epochs have from 1 to 7 digits, and today 13:
		// compared as strings rather than numbers, 9 > 10.
		clock.SetMs(rapid.OneOf(rapid.Just(clock.Ms()), rapid.SampledFrom(smallClocks), rapid.Int64Range(1, clock.Ms())).Draw(t, "clockMs"))
		// Skews below half the lookback keep the gone index's real-time
		// expiry (at least lookback - skew after a leave) longer than a
		// case runs, while a prune bound short of the lookback shows.
		half := svc.Config().ReaperLookback.Milliseconds() / 2
		for i, n := range nodes[1:] {
			ms := rapid.OneOf(rapid.Just(half), rapid.Int64Range(0, half)).Draw(t, fmt.Sprintf("skewMs%d", i+1))
			n.skew = time.Duration(ms) * time.Millisecond
		}
		m := &presenceMachine{h: h, c: c, svc: svc, svcs: svcs, nodes: nodes, clock: clock, keys: svc.Keys(),
			conns: map[roomConn]*mConn{}, seen: map[roomConn]int64{}}
		t.Repeat(map[string]func(*rapid.T){
			"join":      m.join,
			"heartbeat": m.heartbeat,
			"leave":     m.leave,
			"reconnect": m.reconnect,
			"expire":    m.expire,
			"reap":      m.reap,
			"advance":   m.advance,
			"":          m.check,
		})
		cases.Add(1)
		steps.Add(int64(m.steps))
	})
	tb.Logf("sequential: %d actions in %d cases in %v", steps.Load(), cases.Load(), time.Since(start).Round(time.Millisecond))
}

type roomConn struct{ room, conn string }

// numNodes services share the store in the sequential property, each on
// its own clock.
const numNodes = 2

// smallClocks are clock readings (ms) just below a power of ten, so a
// join's epoch and the heartbeats that follow it straddle a digit count.
var smallClocks = []int64{1, 9, 99, 999, 9_999, 99_999, 999_999, 9_999_999}

// mConn is the model of one conn.
type mConn struct {
	inRoom   bool // in the room's conns set (until leave or reaping)
	live     bool // its hash exists
	user     string
	epoch    int64 // the stored epoch (while live)
	last     int64 // the highest epoch ever stored
	state    [numKeys]string
	lastSeen int64
}

type presenceMachine struct {
	h       *harness
	c       backend.Client
	svc     *presence.Service // checks read through it
	svcs    []*presence.Service
	nodes   []*skewed // svcs[i] runs on nodes[i]
	clock   *fakeClock
	keys    core.Keys
	conns   map[roomConn]*mConn
	seen    map[roomConn]int64 // highest epoch seen stored (invariant 1)
	prev    roomConn           // the conn of the previous action, if hasPrev
	hasPrev bool
	steps   int
	checks  int
}

func (m *presenceMachine) ctx(t *rapid.T) context.Context {
	ctx, cancel := m.h.ctx()
	t.Cleanup(cancel)
	return ctx
}

// node draws the service an action runs on, and its clock.
func (m *presenceMachine) node(t *rapid.T) (*presence.Service, *skewed) {
	i := rapid.IntRange(0, len(m.svcs)-1).Draw(t, "node")
	return m.svcs[i], m.nodes[i]
}

// draw draws the conn of an action: often the previous action's, since
// the bugs that take several steps (join on one node, leave on another,
// rejoin) need them on one conn, which 6 conns drawn afresh each time
// rarely give.
func (m *presenceMachine) draw(t *rapid.T) (roomConn, *mConn) {
	rc := m.prev
	if !m.hasPrev || !rapid.Bool().Draw(t, "sameConn") {
		rc = roomConn{rapid.SampledFrom(roomIDs).Draw(t, "room"), rapid.SampledFrom(connIDs).Draw(t, "conn")}
	}
	m.prev, m.hasPrev = rc, true
	return rc, m.conns[rc]
}

// drawFields draws a state (or patch): each key absent ("") or a value.
func drawFields(t *rapid.T, label string) [numKeys]string {
	var f [numKeys]string
	vals := append([]string{""}, stateVals...)
	for i := range f {
		f[i] = rapid.SampledFrom(vals).Draw(t, label+"."+stateKeys[i])
	}
	return f
}

func fieldsJSON(f [numKeys]string) string {
	var parts []string
	for i, v := range f {
		if v != "" {
			parts = append(parts, fmt.Sprintf("%q:%s", stateKeys[i], v))
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func (m *presenceMachine) join(t *rapid.T) {
	rc, mc := m.draw(t)
	m.joinConn(t, rc, mc)
}

// reconnect is a socket that moves to another node (or the same one)
// at once: leave on one node, join on the one it reconnects through.
func (m *presenceMachine) reconnect(t *rapid.T) {
	rc, mc := m.draw(t)
	m.leaveConn(t, rc, mc)
	m.joinConn(t, rc, mc)
}

func (m *presenceMachine) joinConn(t *rapid.T, rc roomConn, mc *mConn) {
	user := rapid.SampledFrom(userIDs).Draw(t, "user")
	state := drawFields(t, "state")
	svc, clock := m.node(t)
	m.steps++
	now := clock.Ms()
	want := now
	if mc != nil && mc.last+1 > want {
		want = mc.last + 1
	}
	j, err := svc.Join(m.ctx(t), rc.room, rc.conn, user, json.RawMessage(fieldsJSON(state)))
	if err != nil {
		t.Fatalf("Join(%s/%s): %v", rc.room, rc.conn, err)
	}
	if prev, ok := m.seen[rc]; ok && j.Epoch <= prev {
		t.Fatalf("invariant 3: Join(%s/%s) returned epoch %d, not above %d stored before", rc.room, rc.conn, j.Epoch, prev)
	}
	if j.Epoch != want {
		t.Fatalf("Join(%s/%s) returned epoch %d, want max(previous %d + 1, now %d) = %d", rc.room, rc.conn, j.Epoch, lastOf(mc), now, want)
	}
	if mc == nil {
		mc = &mConn{}
		m.conns[rc] = mc
	}
	*mc = mConn{inRoom: true, live: true, user: user, epoch: j.Epoch, last: j.Epoch, state: state, lastSeen: now}
	m.seen[rc] = j.Epoch
	m.compareSnapshot(t, rc.room, "Join's snapshot", j.Snapshot)
	// A conn without a TTL outlives its socket's node forever: only the
	// reaper, which skips conns whose hash exists, could remove it.
	if r := m.raw(t, rc); r.pttl <= 0 || r.pttl > svc.Config().TTL.Milliseconds() {
		t.Fatalf("Join(%s/%s) left the conn hash with PTTL %d ms, want in (0, TTL %v]", rc.room, rc.conn, r.pttl, svc.Config().TTL)
	}
}

// drawEpoch draws an epoch in [0, limit] of any digit count, at the
// edges of a count (99, 100) as well as within.
func drawEpoch(t *rapid.T, limit int64) int64 {
	digits := len(strconv.FormatInt(limit, 10))
	d := rapid.IntRange(1, digits).Draw(t, "epochDigits")
	lo, hi := int64(0), int64(9)
	for range d - 1 {
		lo, hi = hi+1, hi*10+9
	}
	hi = min(hi, limit)
	return rapid.OneOf(rapid.Just(lo), rapid.Just(hi), rapid.Int64Range(lo, hi)).Draw(t, "epochAny")
}

func lastOf(mc *mConn) int64 {
	if mc == nil {
		return -1
	}
	return mc.last
}

func (m *presenceMachine) heartbeat(t *rapid.T) {
	rc, mc := m.draw(t)
	kind := rapid.SampledFrom([]string{"none", "stale", "equal", "higher", "zero", "any", "ahead"}).Draw(t, "epoch")
	patch := drawFields(t, "patch")
	svc, clock := m.node(t)
	m.clock.Advance(time.Millisecond) // a stray write of last_seen shows
	m.steps++
	limit := clock.Ms() + presence.EpochLead.Milliseconds()
	ref := clock.Ms()
	if mc != nil {
		ref = mc.epoch
		if !mc.live {
			ref = mc.last
		}
	}
	var p presence.HeartbeatParams
	switch kind {
	case "stale":
		p.Epoch = ptr(ref - 1 - rapid.Int64Range(0, 3).Draw(t, "below"))
	case "equal":
		p.Epoch = ptr(ref)
	case "higher":
		p.Epoch = ptr(ref + 1 + rapid.Int64Range(0, 3).Draw(t, "above"))
	case "zero":
		p.Epoch = ptr(0)
	case "any":
		p.Epoch = ptr(drawEpoch(t, limit))
	case "ahead":
		p.Epoch = ptr(limit + 1 + rapid.Int64Range(0, 3).Draw(t, "beyond"))
	}
	invalid := p.Epoch != nil && (*p.Epoch > limit || *p.Epoch < 0)
	if js := fieldsJSON(patch); js != "{}" || rapid.Bool().Draw(t, "emptyPatch") {
		p.PatchState = json.RawMessage(js)
	}
	fails := invalid || mc == nil || !mc.live || p.Epoch != nil && *p.Epoch < mc.epoch
	var before rawConn
	if fails {
		before = m.raw(t, rc)
	}
	r, err := svc.Heartbeat(m.ctx(t), rc.room, rc.conn, p)
	what := fmt.Sprintf("Heartbeat(%s/%s, epoch %s, patch %s)", rc.room, rc.conn, showEpoch(p.Epoch), p.PatchState)
	if fails {
		if after := m.raw(t, rc); !before.equal(after) || after.pttl > before.pttl {
			t.Fatalf("invariant 2: %s failed (%v) but changed the store:\nbefore %+v\nafter  %+v", what, err, before, after)
		}
	}
	switch {
	case invalid:
		if !errors.Is(err, presence.ErrInvalidArgument) {
			t.Fatalf("%s, negative or more than EpochLead ahead of the clock %d, = %+v, %v; want ErrInvalidArgument", what, clock.Ms(), r, err)
		}
	case mc == nil || !mc.live:
		if !errors.Is(err, presence.ErrConnNotFound) {
			t.Fatalf("%s of a conn that is not live = %+v, %v; want ErrConnNotFound", what, r, err)
		}
	case p.Epoch != nil && *p.Epoch < mc.epoch:
		if !errors.Is(err, presence.ErrStaleEpoch) {
			t.Fatalf("invariant 2: %s below the stored epoch %d = %+v, %v; want ErrStaleEpoch", what, mc.epoch, r, err)
		}
	default:
		if err != nil {
			t.Fatalf("%s with stored epoch %d: %v", what, mc.epoch, err)
		}
		if p.Epoch != nil && *p.Epoch > mc.epoch {
			mc.epoch = *p.Epoch
			mc.last = max(mc.last, mc.epoch)
		}
		changed := false
		for i, v := range patch {
			if v != "" && mc.state[i] != v {
				changed = true
				mc.state[i] = v
			}
		}
		mc.lastSeen = clock.Ms()
		if r.Epoch != mc.epoch || r.Changed != changed {
			t.Fatalf("%s = {Epoch: %d, Changed: %v}, want {Epoch: %d, Changed: %v}", what, r.Epoch, r.Changed, mc.epoch, changed)
		}
	}
}

func (m *presenceMachine) raw(t *rapid.T, rc roomConn) rawConn {
	r, err := readRaw(m.ctx(t), m.c, m.keys, rc.room, rc.conn)
	if err != nil {
		t.Fatalf("reading conn %s/%s: %v", rc.room, rc.conn, err)
	}
	return r
}

func (m *presenceMachine) leave(t *rapid.T) {
	rc, mc := m.draw(t)
	m.leaveConn(t, rc, mc)
}

func (m *presenceMachine) leaveConn(t *rapid.T, rc roomConn, mc *mConn) {
	svc, _ := m.node(t)
	m.steps++
	if err := svc.Leave(m.ctx(t), rc.room, rc.conn); err != nil {
		t.Fatalf("Leave(%s/%s): %v", rc.room, rc.conn, err)
	}
	if mc != nil {
		mc.inRoom, mc.live = false, false
	}
}

// expire deletes a conn hash, as its TTL running out would.
func (m *presenceMachine) expire(t *rapid.T) {
	rc, mc := m.draw(t)
	m.steps++
	if _, err := m.c.Do(m.ctx(t), backend.K("DEL", m.keys.Conn(rc.room, rc.conn))); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if mc != nil {
		mc.live = false
	}
}

func (m *presenceMachine) reap(t *rapid.T) {
	lookback := m.svc.Config().ReaperLookback
	m.clock.Advance(time.Duration(rapid.Int64Range(0, 2*lookback.Milliseconds()).Draw(t, "advanceMs")) * time.Millisecond)
	svc, clock := m.node(t)
	m.steps++
	cutoff := clock.Ms() - lookback.Milliseconds()
	want := 0
	for _, mc := range m.conns {
		if mc.inRoom && !mc.live && mc.lastSeen <= cutoff {
			want++
			mc.inRoom = false
		}
	}
	n, err := svc.Reap(m.ctx(t))
	if err != nil {
		t.Fatalf("Reap: %v", err)
	}
	if n != want {
		t.Fatalf("Reap at cutoff %d removed %d conns, want %d (expired, silent since the cutoff)", cutoff, n, want)
	}
}

func (m *presenceMachine) advance(t *rapid.T) {
	m.clock.Advance(time.Duration(rapid.Int64Range(1, 5000).Draw(t, "advanceMs")) * time.Millisecond)
}

// check compares every room with the model: each conn hash (user,
// epoch, state, last_seen of each live conn, and no hash for any other),
// the conns and members sets, and one room's Snapshot (alternating); and
// that no stored epoch went down. The raw reads share one round trip, so
// a step costs little even on the embedded server, whose scripts are slow.
func (m *presenceMachine) check(t *rapid.T) {
	k := m.keys
	var cmds []backend.Cmd
	for _, room := range roomIDs {
		cmds = append(cmds, backend.K("SMEMBERS", k.Conns(room)), backend.K("SMEMBERS", k.Members(room)))
		for _, c := range connIDs {
			cmds = append(cmds, backend.K("HGETALL", k.Conn(room, c)))
		}
	}
	r, err := m.c.Do(m.ctx(t), cmds...)
	if err == nil {
		err = backend.FirstError(r)
	}
	if err != nil {
		t.Fatalf("reading the rooms: %v", err)
	}
	for _, room := range roomIDs {
		conns, _ := r[0].AsStrings()
		members, _ := r[1].AsStrings()
		var snap []presence.Entry
		for i, c := range connIDs {
			h, err := r[2+i].AsStringMap()
			if err != nil {
				t.Fatalf("HGETALL: %v", err)
			}
			if len(h) > 0 {
				snap = append(snap, entryFromHash(c, h))
			}
		}
		r = r[2+len(connIDs):]
		m.compareSnapshot(t, room, "the conn hashes", snap)
		slices.Sort(conns)
		slices.Sort(members)
		var wantConns, wantMembers []string
		for _, c := range connIDs {
			if mc := m.conns[roomConn{room, c}]; mc != nil && mc.inRoom {
				wantConns = append(wantConns, c)
				if !slices.Contains(wantMembers, mc.user) {
					wantMembers = append(wantMembers, mc.user)
				}
			}
		}
		slices.Sort(wantMembers)
		if !slices.Equal(conns, wantConns) {
			t.Fatalf("room %s has conns %v, want %v", room, conns, wantConns)
		}
		if !slices.Equal(members, wantMembers) {
			t.Fatalf("room %s has members %v, want %v", room, members, wantMembers)
		}
	}
	room := roomIDs[m.checks%len(roomIDs)]
	m.checks++
	snap, err := m.svc.Snapshot(m.ctx(t), room)
	if err != nil {
		t.Fatalf("Snapshot(%s): %v", room, err)
	}
	m.compareSnapshot(t, room, "Snapshot", snap)
}

// entryFromHash reads a conn hash as Snapshot does.
func entryFromHash(conn string, h map[string]string) presence.Entry {
	e := presence.Entry{ConnID: conn, UserID: h["user"], State: core.StateFromHash(h)}
	e.Epoch, _ = strconv.ParseInt(h["epoch"], 10, 64)
	e.LastSeenMs, _ = strconv.ParseInt(h["last_seen_ms"], 10, 64)
	return e
}

func (m *presenceMachine) compareSnapshot(t *rapid.T, room, what string, snap []presence.Entry) {
	got := map[string]presence.Entry{}
	for _, e := range snap {
		got[e.ConnID] = e
	}
	for _, c := range connIDs {
		rc := roomConn{room, c}
		mc := m.conns[rc]
		e, ok := got[c]
		delete(got, c)
		if mc == nil || !mc.live {
			if ok {
				t.Fatalf("%s of %s lists %s, which is not live: %+v", what, room, c, e)
			}
			continue
		}
		if !ok {
			t.Fatalf("%s of %s lacks live conn %s", what, room, c)
		}
		if e.Epoch < m.seen[rc] {
			t.Fatalf("invariant 1: the stored epoch of %s/%s went from %d down to %d", room, c, m.seen[rc], e.Epoch)
		}
		m.seen[rc] = max(m.seen[rc], e.Epoch)
		want := fieldsJSON(mc.state)
		if e.UserID != mc.user || e.Epoch != mc.epoch || !sameJSONObject(e.State, want) || e.LastSeenMs != mc.lastSeen {
			t.Fatalf("%s of %s: %s is {user %s, epoch %d, state %s, lastSeen %d}, want {user %s, epoch %d, state %s, lastSeen %d}",
				what, room, c, e.UserID, e.Epoch, e.State, e.LastSeenMs, mc.user, mc.epoch, want, mc.lastSeen)
		}
	}
	for c, e := range got {
		t.Fatalf("%s of %s lists unknown conn %s: %+v", what, room, c, e)
	}
}
