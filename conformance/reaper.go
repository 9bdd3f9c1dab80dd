package conformance

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"pgregory.net/rapid"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// PropReaper asserts the notify reaper (Config.Reaper "notify",
// docs/DESIGN.md "Reaper modes") on two nodes that both run it, with a
// backstop sweep ten minutes away: a conn that stops heartbeating leaves
// (exactly one leave, on the room's next seq) long before any sweep could
// have removed it, and no sooner than its last heartbeat plus the
// lookback; a rejoin gets an epoch strictly above the reaped one, even
// one a heartbeat pushed into the future; a conn of the same room that
// keeps heartbeating is never reaped. The reaps must come from
// expired-key events (ReaperStatus.Notified) wherever notify can run: on
// a client implementing backend.NodeSubscriber and backend.MasterRunner
// and a server that answers CONFIG (the property sets
// ReaperConfigureNotify). Elsewhere (the embedded server has no CONFIG and
// publishes no notifications) the nodes must say they fell back to
// sweeping, with a reason, and still reap every ReaperInterval.
const PropReaper = "reaper"

// The notify reaper's settings under test. The lookback is twice the TTL
// so a conn's key expires before its reap is due: the reaper has to wait,
// and one that reaps at the event is seen.
const (
	reaperTTL       = time.Second
	reaperLookback  = 2 * reaperTTL
	reaperInterval  = 500 * time.Millisecond // the fallback's sweep
	reaperBackstop  = 10 * time.Minute       // no sweep within the property
	reaperBeat      = reaperTTL / 10         // the live conn's heartbeat period
	reaperLeaveWait = 15 * time.Second       // a leave's slack past its due time: a hang detector
	reaperEpochLead = 10 * time.Minute       // the dead conn's epoch, ahead of the clock
)

// notifyExpected reports whether the notify reaper can run on c: the
// client subscribes per master and addresses each one, and the server
// answers CONFIG GET notify-keyspace-events (so ReaperConfigureNotify can
// enable the events); why says what is missing otherwise.
func notifyExpected(ctx context.Context, c backend.Client) (ok bool, why string) {
	if _, ok := c.(backend.NodeSubscriber); !ok {
		return false, fmt.Sprintf("%T does not implement backend.NodeSubscriber", c)
	}
	if _, ok := c.(backend.MasterRunner); !ok {
		return false, fmt.Sprintf("%T does not implement backend.MasterRunner", c)
	}
	r, err := c.Do(ctx, backend.Cmd{Name: "CONFIG", Args: []string{"GET", "notify-keyspace-events"}})
	if err == nil {
		err = r[0].Error()
	}
	if err != nil {
		return false, "the server refuses CONFIG GET notify-keyspace-events: " + err.Error()
	}
	return true, ""
}

// reaperEvents records a subscriber's events per room, with arrival times.
type reaperEvents struct {
	mu     sync.Mutex
	byRoom map[string][]presence.Event
	at     map[string]time.Time // "room/conn" → arrival of its first leave
}

func (r *reaperEvents) add(ev presence.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byRoom[ev.RoomID] = append(r.byRoom[ev.RoomID], ev)
	id := ev.RoomID + "/" + ev.ConnID
	if _, seen := r.at[id]; ev.Type == "leave" && !seen {
		r.at[id] = time.Now()
	}
}

func (r *reaperEvents) leftAt(room, conn string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.at[room+"/"+conn]
	return t, ok
}

// heard reports whether room's events up to seq have all arrived.
func (r *reaperEvents) heard(room string, seq int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.byRoom[room] {
		if ev.Seq >= seq {
			return true
		}
	}
	return false
}

// deadConn is a conn the property stops heartbeating.
type deadConn struct {
	room, conn, user string
	node             int
	last             time.Time // when its last heartbeat (or join) was sent
	epoch            int64
}

func checkReaper(tb rapid.TB, h *harness) {
	prefix := h.prefix()
	clients := []backend.Client{h.client(), h.client()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	notify, why := notifyExpected(ctx, clients[0])
	var svcs []*presence.Service
	defer func() {
		for _, s := range svcs {
			s.Close()
		}
		cleanup(clients[0], prefix)
	}()
	for _, c := range clients {
		s, err := h.serviceWith(c, prefix, nil, func(cfg *presence.Config) {
			cfg.Now = nil // the real clock: keys expire in Redis's time
			cfg.Reaper = presence.ReaperNotify
			cfg.ReaperConfigureNotify = true
			cfg.TTL = reaperTTL
			cfg.ReaperLookback = reaperLookback
			cfg.ReaperInterval = reaperInterval
			cfg.ReaperBackstopInterval = reaperBackstop
		})
		if err != nil {
			tb.Fatalf("presence.New: %v", err)
		}
		svcs = append(svcs, s)
	}
	events := &reaperEvents{byRoom: map[string][]presence.Event{}, at: map[string]time.Time{}}
	// Followed before any join: a subscription to every room is lossy in
	// sharded mode (it finds new rooms late).
	sub, err := observe(ctx, svcs[0], []string{"r0", "r1"}, nil, events.add, nil)
	if err != nil {
		tb.Fatalf("observe: %v", err)
	}
	defer sub.Close()

	// Each node ends its first attempt to subscribe in notify mode, or in
	// sweep mode with the reason, as the target allows.
	for i, s := range svcs {
		st := s.ReaperStatus()
		for deadline := time.Now().Add(30 * time.Second); st.Active == "starting" && time.Now().Before(deadline); st = s.ReaperStatus() {
			time.Sleep(10 * time.Millisecond)
		}
		switch {
		case st.Mode != presence.ReaperNotify:
			tb.Fatalf("node %d: ReaperStatus %+v: configured as %q", i, st, presence.ReaperNotify)
		case notify && st.Active != presence.ReaperNotify:
			tb.Fatalf("node %d: ReaperStatus %+v: the notify reaper is not running, though the client subscribes per master and the server answers CONFIG", i, st)
		case !notify && (st.Active != presence.ReaperSweep || st.Reason == nil):
			tb.Fatalf("node %d: ReaperStatus %+v: the notify reaper cannot run here (%s), so it must sweep and say why", i, st, why)
		}
	}
	if !notify {
		tb.Logf("reaper: notify unavailable (%s): checking the fallback sweep", why)
	}

	// r0/c1 keeps heartbeating through node 1 while r0/c0 (its epoch pushed
	// ahead of the clock) and r1/c2 stop.
	call := func(what string, f func(ctx context.Context) error) {
		ctx, cancel := h.ctx()
		defer cancel()
		if err := f(ctx); err != nil {
			tb.Fatalf("%s: %v", what, err)
		}
	}
	firstSeq := map[string]int64{}
	join := func(node int, room, conn, user string) (time.Time, presence.JoinResult) {
		var j presence.JoinResult
		sent := time.Now()
		call("join "+room+"/"+conn, func(ctx context.Context) (err error) {
			j, err = svcs[node].Join(ctx, room, conn, user, nil)
			return err
		})
		if _, ok := firstSeq[room]; !ok {
			firstSeq[room] = j.Seq
		}
		return sent, j
	}
	join(1, "r0", "c1", "u1")
	live := startLiveConn(h, svcs[1], "r0", "c1")
	defer live.stop()

	c0 := deadConn{room: "r0", conn: "c0", user: "u0", node: 0}
	join(0, c0.room, c0.conn, c0.user)
	ahead := time.Now().Add(reaperEpochLead).UnixMilli()
	c0.last = time.Now()
	call("heartbeat r0/c0 with a future epoch", func(ctx context.Context) error {
		r, err := svcs[0].Heartbeat(ctx, c0.room, c0.conn, presence.HeartbeatParams{Epoch: &ahead})
		c0.epoch = r.Epoch
		if err == nil && r.Epoch != ahead {
			err = fmt.Errorf("epoch %d, want the one sent, %d", r.Epoch, ahead)
		}
		return err
	})
	c2 := deadConn{room: "r1", conn: "c2", user: "u1", node: 1}
	var j presence.JoinResult
	c2.last, j = join(1, c2.room, c2.conn, c2.user)
	c2.epoch = j.Epoch
	dead := []deadConn{c0, c2}

	// The leaves: none before the lookback, each well before the backstop.
	due := c2.last.Add(reaperLookback)
	if !notify {
		due = due.Add(reaperInterval)
	}
	for _, d := range dead {
		at, ok := time.Time{}, false
		for deadline := due.Add(reaperLeaveWait); ; time.Sleep(5 * time.Millisecond) {
			if at, ok = events.leftAt(d.room, d.conn); ok || time.Now().After(deadline) {
				break
			}
		}
		if !ok {
			st := svcs[0].ReaperStatus()
			tb.Fatalf("%s/%s stopped heartbeating %v ago and has not left (lookback %v, backstop sweep %v away); node 0's reaper: %+v",
				d.room, d.conn, time.Since(d.last).Round(time.Millisecond), reaperLookback, reaperBackstop, st)
		}
		// Its last_seen is the node's clock when the call was sent, in ms.
		if early := d.last.Add(reaperLookback - time.Millisecond).Sub(at); early > 0 {
			tb.Fatalf("%s/%s left %v after its last heartbeat, before the lookback %v: a conn is reaped only once its last heartbeat is older than the lookback",
				d.room, d.conn, at.Sub(d.last).Round(time.Millisecond), reaperLookback)
		}
		tb.Logf("reaper: %s/%s left %v after its last heartbeat (lookback %v)", d.room, d.conn, at.Sub(d.last).Round(time.Millisecond), reaperLookback)
	}
	// The live conn outlasts the reap of its room by a heartbeat or two.
	time.Sleep(3 * reaperBeat)
	beats, gap, beatErr := live.stop()
	if beats == 0 {
		tb.Fatalf("r0/c1: no heartbeat went through")
	}
	_, c1Left := events.leftAt("r0", "c1")
	var snap []presence.Entry
	call("snapshot r0", func(ctx context.Context) (err error) {
		snap, err = svcs[0].Snapshot(ctx, "r0")
		return err
	})
	inSnap := slices.ContainsFunc(snap, func(e presence.Entry) bool { return e.ConnID == "c1" })
	switch {
	case (c1Left || !inSnap || beatErr != nil) && gap >= reaperTTL:
		// The machine stalled the heartbeats past the TTL: the conn may
		// rightly have expired. Nothing to conclude.
		tb.Logf("reaper: r0/c1 went %v without a heartbeat, past the TTL %v: its fate is not checked", gap.Round(time.Millisecond), reaperTTL)
	case c1Left:
		tb.Fatalf("r0/c1 heartbeated every %v (longest gap %v, TTL %v) and was reaped: a leave was published for it", reaperBeat, gap.Round(time.Millisecond), reaperTTL)
	case beatErr != nil:
		tb.Fatalf("r0/c1 heartbeated every %v (longest gap %v, TTL %v), and a heartbeat failed: %v", reaperBeat, gap.Round(time.Millisecond), reaperTTL, beatErr)
	case !inSnap:
		tb.Fatalf("r0/c1 heartbeated every %v (longest gap %v, TTL %v) and is missing from the snapshot %v", reaperBeat, gap.Round(time.Millisecond), reaperTTL, snap)
	}

	// Rejoins are strictly newer than the reaped epochs.
	last := map[string]int64{}
	for _, d := range dead {
		_, j := join(d.node, d.room, d.conn, d.user)
		if j.Epoch <= d.epoch {
			tb.Fatalf("%s/%s rejoined after its reap with epoch %d, not above its reaped epoch %d", d.room, d.conn, j.Epoch, d.epoch)
		}
		last[d.room] = j.Seq
	}
	// Every event up to the rejoins has arrived: each room's seqs are
	// contiguous, with exactly one leave per reaped conn, carrying its
	// epoch.
	for room, seq := range last {
		for deadline := time.Now().Add(10 * time.Second); !events.heard(room, seq); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				tb.Fatalf("room %s: the rejoin's event (seq %d) never arrived", room, seq)
			}
		}
	}
	events.mu.Lock()
	defer events.mu.Unlock()
	for room, seq := range last {
		var evs []presence.Event
		for _, ev := range events.byRoom[room] {
			if ev.Seq >= firstSeq[room] && ev.Seq <= seq {
				evs = append(evs, ev)
			}
		}
		slices.SortFunc(evs, func(a, b presence.Event) int { return cmp.Compare(a.Seq, b.Seq) })
		for i, ev := range evs {
			if want := firstSeq[room] + int64(i); ev.Seq != want {
				tb.Fatalf("room %s: event %d of %d has seq %d, want %d (events %v)", room, i, len(evs), ev.Seq, want, evs)
			}
		}
		if n := int64(len(evs)); n != seq-firstSeq[room]+1 {
			tb.Fatalf("room %s: %d events from seq %d to %d", room, n, firstSeq[room], seq)
		}
		for _, d := range dead {
			if d.room != room {
				continue
			}
			var leaves []presence.Event
			for _, ev := range evs {
				if ev.Type == "leave" && ev.ConnID == d.conn {
					leaves = append(leaves, ev)
				}
			}
			if len(leaves) != 1 || leaves[0].Epoch != d.epoch {
				tb.Fatalf("%s/%s: leaves %v; want exactly one, with epoch %d", room, d.conn, leaves, d.epoch)
			}
		}
	}

	var notified uint64
	for _, s := range svcs {
		notified += s.ReaperStatus().Notified
	}
	switch {
	case notify && notified < uint64(len(dead)):
		tb.Fatalf("reaper: %d conns reaped by expired-key events on the two nodes, want %d: the leaves came from elsewhere", notified, len(dead))
	case !notify && notified != 0:
		tb.Fatalf("reaper: %d conns reaped by expired-key events while the nodes say they sweep", notified)
	}
}

// liveConn heartbeats one conn every reaperBeat until stopped.
type liveConn struct {
	halt chan struct{}
	done chan struct{}
	once sync.Once

	beats int
	gap   time.Duration // the longest span between one call's start and the next one's end
	err   error         // the first failed heartbeat
}

func startLiveConn(h *harness, s *presence.Service, room, conn string) *liveConn {
	l := &liveConn{halt: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(reaperBeat)
		defer t.Stop()
		prev := time.Now()
		for {
			select {
			case <-l.halt:
				return
			case <-t.C:
			}
			start := time.Now()
			ctx, cancel := h.ctx()
			_, err := s.Heartbeat(ctx, room, conn, presence.HeartbeatParams{})
			cancel()
			l.gap = max(l.gap, time.Since(prev))
			prev = start
			if err != nil {
				l.err = errors.Join(l.err, fmt.Errorf("heartbeat %d: %w", l.beats+1, err))
				return
			}
			l.beats++
		}
	}()
	return l
}

// stop ends the heartbeats and returns how many went through, the longest
// gap and the first error. Idempotent.
func (l *liveConn) stop() (int, time.Duration, error) {
	l.once.Do(func() { close(l.halt) })
	<-l.done
	return l.beats, l.gap, l.err
}
