package conformance

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"pgregory.net/rapid"

	"github.com/realtime-message/presence"
)

// PropSeq asserts the room sequence numbers (docs/PROTOCOL.md): under
// Options.Clients concurrent clients on Options.Nodes services joining,
// heartbeating with patches (the strategy's update events) and leaving,
// each room's events carry strictly increasing seq without gaps, and every
// snapshot taken meanwhile (SnapshotSeq) equals the room rebuilt from the
// events with seq up to the snapshot's, so a client can order the two.
const PropSeq = "seq"

type seqSnap struct {
	room string
	res  presence.SnapshotResult
}

// seqView is a room as a client rebuilds it: conn → user, state, epoch.
type seqView map[string]string

func (v seqView) apply(ev presence.Event) {
	switch ev.Type {
	case "join", "update":
		v[ev.ConnID] = entryKey(ev.UserID, ev.State, ev.Epoch)
	case "leave":
		delete(v, ev.ConnID)
	}
}

func entryKey(user string, state json.RawMessage, epoch int64) string {
	var s any
	_ = json.Unmarshal(state, &s)
	b, _ := json.Marshal(s) // sorted keys: a canonical form to compare
	return fmt.Sprintf("%s %s %d", user, b, epoch)
}

func viewOf(entries []presence.Entry) seqView {
	v := seqView{}
	for _, e := range entries {
		v[e.ConnID] = entryKey(e.UserID, e.State, e.Epoch)
	}
	return v
}

func checkSeq(tb rapid.TB, h *harness) {
	prefix := h.prefix()
	nowMs := time.Now().UnixMilli()
	now := func() time.Time { return time.UnixMilli(nowMs) }
	// The observer reads on a client without injected faults: a lost
	// subscription would be the harness's gap, not the strategy's.
	obs, err := h.service(h.client(), prefix, now)
	if err != nil {
		tb.Fatalf("presence.New: %v", err)
	}
	defer obs.Close()
	svcs := h.services(tb, prefix, now)
	defer cleanup(unfaulty(svcs[0].Client()), prefix)

	var mu sync.Mutex
	events := map[string][]presence.Event{}
	ctx, cancel := h.ctx()
	sub, err := observe(ctx, obs, roomIDs, nil, func(ev presence.Event) {
		mu.Lock()
		events[ev.RoomID] = append(events[ev.RoomID], ev)
		mu.Unlock()
	}, nil)
	cancel()
	if err != nil {
		tb.Fatalf("observe: %v", err)
	}
	defer sub.Close()

	hist := newHistory(h.opts)
	var snaps []seqSnap
	var wg sync.WaitGroup
	for i := range h.opts.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := seqClient(h, hist, svcs[i%len(svcs)], rand.New(rand.NewPCG(rand.Uint64(), uint64(i))))
			mu.Lock()
			snaps = append(snaps, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()

	// Quiescence: each room's last event has reached the observer.
	finals := map[string]presence.SnapshotResult{}
	for _, room := range roomIDs {
		ctx, cancel := h.ctx()
		f, err := obs.SnapshotSeq(ctx, room)
		cancel()
		if err != nil {
			tb.Fatalf("SnapshotSeq %s: %v", room, err)
		}
		finals[room] = f
		snaps = append(snaps, seqSnap{room, f})
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			evs := events[room]
			heard := f.Seq == 0 || len(evs) > 0 && evs[len(evs)-1].Seq >= f.Seq
			mu.Unlock()
			if heard {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("room %s is at seq %d; the last event heard has seq %v (of %d events)", room, f.Seq, lastSeq(evs), len(evs))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, room := range roomIDs {
		evs := events[room]
		for i := 1; i < len(evs); i++ {
			if evs[i].Seq != evs[i-1].Seq+1 {
				tb.Fatalf("room %s: event %d (%s of %s) has seq %d after seq %d: seqs must grow by one", room, i, evs[i].Type, evs[i].ConnID, evs[i].Seq, evs[i-1].Seq)
			}
		}
		if len(evs) > 0 && evs[0].Seq <= 0 {
			tb.Fatalf("room %s: first event has seq %d", room, evs[0].Seq)
		}
	}
	// One walk per room: snapshots in seq order against the view the
	// events build up to each one.
	slices.SortStableFunc(snaps, func(a, b seqSnap) int { return cmp.Compare(a.res.Seq, b.res.Seq) })
	checked := 0
	for _, room := range roomIDs {
		evs := events[room]
		v, next := seqView{}, 0
		for _, s := range snaps {
			if s.room != room {
				continue
			}
			if len(evs) > 0 && s.res.Seq != 0 && s.res.Seq < evs[0].Seq-1 {
				tb.Fatalf("room %s: snapshot at seq %d, before the room's first event (seq %d)", room, s.res.Seq, evs[0].Seq)
			}
			for next < len(evs) && evs[next].Seq <= s.res.Seq {
				v.apply(evs[next])
				next++
			}
			if got := viewOf(s.res.Snapshot); !maps.Equal(got, v) {
				tb.Fatalf("room %s: snapshot at seq %d holds %v; its events up to that seq build %v", room, s.res.Seq, got, v)
			}
			checked++
		}
	}
	n := 0
	for _, evs := range events {
		n += len(evs)
	}
	tb.Logf("seq: %d events in %d rooms, %d snapshots ordered against them (%s)", n, len(roomIDs), checked, hist.summary())
}

func lastSeq(evs []presence.Event) any {
	if len(evs) == 0 {
		return "none"
	}
	return evs[len(evs)-1].Seq
}

// seqClient runs joins, patching heartbeats, leaves and snapshots until
// the history's budget ends, and returns its snapshots.
func seqClient(h *harness, hist *history, svc *presence.Service, rnd *rand.Rand) []seqSnap {
	var snaps []seqSnap
	for hist.next() {
		room, conn := roomIDs[rnd.IntN(len(roomIDs))], connIDs[rnd.IntN(len(connIDs))]
		ctx, cancel := h.ctx()
		var err error
		var what string
		switch r := rnd.IntN(100); {
		case r < 20:
			what = "join"
			var j presence.JoinResult
			j, err = svc.Join(ctx, room, conn, userIDs[rnd.IntN(len(userIDs))], json.RawMessage(fmt.Sprintf(`{"k0":%d}`, rnd.IntN(3))))
			if err == nil {
				snaps = append(snaps, seqSnap{room, presence.SnapshotResult{Snapshot: j.Snapshot, Seq: j.Seq}})
			}
		case r < 75:
			what = "heartbeat"
			_, err = svc.Heartbeat(ctx, room, conn, presence.HeartbeatParams{PatchState: json.RawMessage(fmt.Sprintf(`{"k1":%d}`, rnd.IntN(4)))})
		case r < 85:
			what = "leave"
			err = svc.Leave(ctx, room, conn)
		default:
			what = "snapshot"
			var s presence.SnapshotResult
			if s, err = svc.SnapshotSeq(ctx, room); err == nil {
				snaps = append(snaps, seqSnap{room, s})
			}
		}
		cancel()
		// Failures (injected faults, an unknown conn) change nothing the
		// property checks: it reads only the events and the snapshots.
		_ = err
		hist.mu.Lock()
		hist.counts[what]++
		hist.mu.Unlock()
	}
	return snaps
}
