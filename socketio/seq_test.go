package socketio_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

// Issue 14: a client that mirrors a room from its join snapshot and the
// presence:events that follow, by the rule of docs/PROTOCOL.md (apply, in
// order, the events with seq above the snapshot's; a gap or a resync event
// means presence:sync), ends with exactly the room's membership and states,
// in every run. A client that ignores seq (it takes the snapshot when the
// ack arrives and applies every later event) must diverge in at least one
// run: an event that overtakes the join ack is lost to it. Both clients read
// the same frames, so only the rule differs.
func TestSeqMirrorProperty(t *testing.T) {
	runs, clients, ops := 6, 8, 10
	if testing.Short() {
		runs, clients, ops = 4, 6, 8
	}
	for _, srv := range redistest.Targets(t) {
		for _, be := range []string{"rueidis", "goredis"} {
			t.Run(srv.Name+"/"+be, func(t *testing.T) {
				naiveDiverged := 0
				gaps := 0
				for run := range runs {
					st := seqRun(t, srv, be, uint64(run+1), clients, ops)
					naiveDiverged += st.naiveDiverged
					gaps += st.gaps
				}
				t.Logf("naive clients diverged: %d; rule-following clients that resynced on a gap: %d", naiveDiverged, gaps)
				if naiveDiverged == 0 {
					t.Errorf("in %d seeded runs no client that ignores seq diverged: the scenario cannot tell the rule from no rule", runs)
				}
			})
		}
	}
}

type seqStats struct{ naiveDiverged, gaps int }

// seqClient is one simulated user: a socket at a time, on either node.
type seqClient struct {
	t     testing.TB
	idx   int
	nodes []*node
	rng   *rand.Rand

	c      *client
	log    []siotest.Event // every event of c, in arrival order
	joined bool
	ackAt  int            // log position of the latest join ack
	ack    map[string]any // the latest join ack
	n      int            // the state counter it patches
}

func (sc *seqClient) drain() {
	if sc.c != nil {
		sc.log = append(sc.log, sc.c.c.Events()...)
	}
}

func (sc *seqClient) dial() {
	sc.c = dial(sc.t, sc.nodes[sc.rng.IntN(len(sc.nodes))].url)
	sc.log, sc.joined = nil, false
}

func (sc *seqClient) join(room string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc.n++
	args, seen, err := sc.c.c.CallSeen(ctx, socketio.EventJoin, map[string]any{
		"roomId": room, "userId": fmt.Sprint("u", sc.idx%3), "state": map[string]any{"n": sc.n, "c": sc.idx},
	})
	if err != nil {
		return err
	}
	var a map[string]any
	if err := json.Unmarshal(args[0], &a); err != nil || a["ok"] != true {
		return fmt.Errorf("join ack %s", args[0])
	}
	sc.drain()
	sc.joined, sc.ack, sc.ackAt = true, a, seen
	return nil
}

func (sc *seqClient) step(room string) error {
	switch r := sc.rng.IntN(10); {
	case !sc.joined:
		return sc.join(room)
	case r < 6:
		sc.n++
		a := sc.c.call(socketio.EventHeartbeat, map[string]any{"patchState": map[string]any{"n": sc.n}})
		if a["ok"] != true {
			return fmt.Errorf("heartbeat ack %v", a)
		}
	case r < 8:
		// Reconnect: the old socket's disconnect leaves; a new socket on
		// either node joins.
		sc.c.close()
		sc.dial()
		return sc.join(room)
	default:
		sc.c.ok(socketio.EventLeave)
		sc.joined = false
		if sc.rng.IntN(2) == 0 {
			return sc.join(room)
		}
	}
	return nil
}

// member is what a client knows of one conn.
type member struct {
	User  string
	State string // canonical JSON
	Epoch int64
}

func canon(v any) string {
	b, _ := json.Marshal(v) // maps marshal with sorted keys
	return string(b)
}

func snapshotOf(v any) map[string]member {
	out := map[string]member{}
	list, _ := v.([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		out[m["connId"].(string)] = member{User: m["userId"].(string), State: canon(m["state"]), Epoch: num(m["epoch"])}
	}
	return out
}

func apply(view map[string]member, ev map[string]any) {
	id, _ := ev["connId"].(string)
	switch ev["type"] {
	case "join", "update":
		view[id] = member{User: ev["userId"].(string), State: canon(ev["state"]), Epoch: num(ev["epoch"])}
	case "leave":
		delete(view, id)
	}
}

// follow is the rule: from the ack on, events with seq above the
// snapshot's in order; it reports whether it needs a resync (a gap, or
// the server said so).
func (sc *seqClient) follow() (map[string]member, bool) {
	view := snapshotOf(sc.ack["snapshot"])
	seq := num(sc.ack["seq"])
	for _, e := range sc.log {
		m := e.Map()
		if e.Name != socketio.EventPresence {
			continue
		}
		if m["type"] == "resync" {
			return nil, true
		}
		s := num(m["seq"])
		if s <= seq {
			continue
		}
		if s != seq+1 {
			return nil, true
		}
		apply(view, m)
		seq = s
	}
	return view, false
}

// naive takes the snapshot when the ack arrives and applies every event
// received after it, seq or no seq.
func (sc *seqClient) naive() map[string]member {
	view := snapshotOf(sc.ack["snapshot"])
	for _, e := range sc.log[sc.ackAt:] {
		if e.Name == socketio.EventPresence {
			apply(view, e.Map())
		}
	}
	return view
}

func seqRun(t *testing.T, srv *redistest.Server, be string, seed uint64, clients, ops int) seqStats {
	t.Helper()
	prefix := redistest.Prefix(t)
	opts := socketio.Options{PresenceRate: socketio.Rate{PerSecond: 1000, Burst: 1000}}
	nodes := []*node{
		startNode(t, srv, nodeConfig{Backend: be, Prefix: prefix, Options: opts}),
		startNode(t, srv, nodeConfig{Backend: be, Prefix: prefix, Options: opts}),
	}
	const room = "seq-room"
	cs := make([]*seqClient, clients)
	for i := range cs {
		cs[i] = &seqClient{t: t, idx: i, nodes: nodes, rng: rand.New(rand.NewPCG(seed, uint64(i)))}
		cs[i].dial()
	}
	// Everyone joins at once, then churns; the start line makes the joins
	// overlap, as a room's first moments do.
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := make(chan struct{})
	for _, sc := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range ops {
				if err := sc.step(room); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("seed %d: %v", seed, err)
	}

	// Quiescence: every change has been published; wait until each joined
	// client has heard of the room's last one (or its snapshot holds it).
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	final, err := nodes[0].svc.SnapshotSeq(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	truth := map[string]member{}
	for _, e := range final.Snapshot {
		var st any
		_ = json.Unmarshal(e.State, &st)
		truth[e.ConnID] = member{User: e.UserID, State: canon(st), Epoch: e.Epoch}
	}
	var st seqStats
	for _, sc := range cs {
		if !sc.joined {
			continue
		}
		for {
			sc.drain()
			heard := num(sc.ack["seq"])
			for _, e := range sc.log {
				heard = max(heard, num(e.Map()["seq"]))
			}
			if heard >= final.Seq {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("seed %d: client %d heard up to seq %d, the room is at %d", seed, sc.idx, heard, final.Seq)
			}
			time.Sleep(20 * time.Millisecond)
		}
		view, resync := sc.follow()
		if resync {
			st.gaps++
			a := sc.c.ok(socketio.EventSync)
			if a["roomId"] != room || num(a["seq"]) != final.Seq {
				t.Fatalf("seed %d: presence:sync ack %v, want room %s at seq %d", seed, a, room, final.Seq)
			}
			view = snapshotOf(a["snapshot"])
		}
		if !reflect.DeepEqual(view, truth) {
			t.Errorf("seed %d: client %d (conn %s) following seq holds %v, the room is %v (seq %d)", seed, sc.idx, sc.c.id(), view, truth, final.Seq)
		}
		if !reflect.DeepEqual(sc.naive(), truth) {
			st.naiveDiverged++
		}
	}
	for _, n := range nodes {
		n.stop()
	}
	return st
}

// The join ack carries its join event's seq; every change takes the next
// one (a heartbeat that changes nothing takes none); presence:sync answers
// the socket's room with its seq; after the node's event subscription
// reconnected it tells its rooms to resync; a room whose counter Redis lost
// restarts above every seq it handed out.
func TestSyncAndResync(t *testing.T) {
	srv := redistest.NewStandalone(t)
	n := startNode(t, srv, nodeConfig{Reaper: healReaper, TTL: time.Minute})
	room := "room-" + redistest.Prefix(t)
	a, b, c := dial(t, n.url), dial(t, n.url), dial(t, n.url)
	s1 := num(a.ok(socketio.EventJoin, map[string]any{"roomId": room, "userId": "alice"})["seq"])
	s2 := num(b.ok(socketio.EventJoin, map[string]any{"roomId": room, "userId": "bob"})["seq"])
	if s1 <= 0 || s2 != s1+1 {
		t.Fatalf("join acks carry seq %d then %d, want a positive seq and the next", s1, s2)
	}
	if ev := a.waitEvent(socketio.EventPresence, presenceEvent("join", b.id())); num(ev["seq"]) != s2 {
		t.Fatalf("bob's join event %v, want seq %d", ev, s2)
	}
	b.ok(socketio.EventHeartbeat, map[string]any{"patchState": map[string]any{"k": 1}})
	b.ok(socketio.EventHeartbeat, map[string]any{"patchState": map[string]any{"k": 1}}) // no change: no seq
	if ev := a.waitEvent(socketio.EventPresence, presenceEvent("update", b.id())); num(ev["seq"]) != s2+1 {
		t.Fatalf("update event %v, want seq %d", ev, s2+1)
	}
	sync := a.ok(socketio.EventSync)
	if sync["roomId"] != room || num(sync["seq"]) != s2+1 || len(snapshotOf(sync["snapshot"])) != 2 {
		t.Fatalf("presence:sync ack %v, want room %s at seq %d with 2 conns", sync, room, s2+1)
	}
	c.fail(socketio.CodePresenceNotJoined, socketio.EventSync)

	redisDo(t, srv, "CLIENT", "KILL", "TYPE", "pubsub")
	for _, cl := range []*client{a, b} {
		cl.waitEventFor(healDeadline, socketio.EventPresence, func(m map[string]any) bool {
			return m["type"] == "resync" && m["roomId"] == room
		})
	}
	before := num(a.ok(socketio.EventSync)["seq"])

	redisDo(t, srv, "FLUSHALL")
	waitMembers(t, n, room, healDeadline, sorted(a.id(), b.id())...)
	after := a.ok(socketio.EventSync)
	if num(after["seq"]) <= before || len(snapshotOf(after["snapshot"])) != 2 {
		t.Fatalf("after Redis lost the room, presence:sync %v; want both conns and a seq above %d", after, before)
	}
}
