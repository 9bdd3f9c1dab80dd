package socketio_test

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/luasrc"
	"github.com/realtime-message/presence/socketio"
)

// gateClient counts heartbeat scripts and can hold the next one until the
// test opens its gate, so a socket's later events queue up behind it.
type gateClient struct {
	backend.Client
	heartbeats atomic.Int64

	mu      sync.Mutex
	gate    chan struct{}
	arrived chan struct{}
}

func isHeartbeat(c backend.Cmd) bool {
	return (c.Name == "EVALSHA" || c.Name == "EVAL") && len(c.Pre) > 0 &&
		(c.Pre[0] == luasrc.Heartbeat.SHA1 || c.Pre[0] == luasrc.Heartbeat.Source)
}

func (g *gateClient) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	for _, c := range cmds {
		if !isHeartbeat(c) {
			continue
		}
		g.heartbeats.Add(1)
		g.mu.Lock()
		gate, arrived := g.gate, g.arrived
		g.gate = nil
		g.mu.Unlock()
		if gate != nil {
			close(arrived)
			<-gate
		}
	}
	return g.Client.Do(ctx, cmds...)
}

// hold makes the next heartbeat wait until the returned func is called;
// the channel closes when that heartbeat reached Redis's door.
func (g *gateClient) hold() (arrived <-chan struct{}, release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate, g.arrived = make(chan struct{}), make(chan struct{})
	gate := g.gate
	return g.arrived, sync.OnceFunc(func() { close(gate) })
}

// asyncCall sends an event and delivers its ack on the returned channel.
func asyncCall(c *client, event string, args ...any) <-chan map[string]any {
	out := make(chan map[string]any, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		m, err := c.c.CallMap(ctx, event, args...)
		if err != nil {
			m = map[string]any{"callError": err.Error()}
		}
		out <- m
	}()
	return out
}

func waitQueued(t *testing.T, n *node, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for socketio.QueuedEvents(n.binding) != want {
		if time.Now().After(deadline) {
			t.Fatalf("queued events: %d, want %d", socketio.QueuedEvents(n.binding), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func recvAck(t *testing.T, ch <-chan map[string]any) map[string]any {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("no ack")
		return nil
	}
}

func startGated(t *testing.T, opts socketio.Options) (*node, *gateClient) {
	g := &gateClient{}
	n := startNode(t, redistest.Embedded(t), nodeConfig{Options: opts, Wrap: func(c backend.Client) backend.Client { g.Client = c; return g }})
	return n, g
}

// TestHeartbeatsQueuedBehindASlowOneRunAsOne: heartbeats that queue behind
// a slow one make one script call with their patches merged in order, and
// each caller gets its result.
func TestHeartbeatsQueuedBehindASlowOneRunAsOne(t *testing.T) {
	var coalesced atomic.Int64
	n, g := startGated(t, socketio.Options{Hooks: socketio.Hooks{Coalesced: func(k int) { coalesced.Add(int64(k)) }}})
	room := "room-" + redistest.Prefix(t)
	a := dial(t, n.url)
	watcher := dial(t, n.url)
	watcher.ok("presence:join", map[string]any{"roomId": room, "userId": "w"})
	a.ok("presence:join", map[string]any{"roomId": room, "userId": "a", "state": map[string]any{"a": 0, "keep": true}})

	arrived, release := g.hold()
	defer release()
	h1 := asyncCall(a, "presence:heartbeat", map[string]any{"patchState": map[string]any{"a": 1}})
	<-arrived
	h2 := asyncCall(a, "presence:heartbeat", map[string]any{"patchState": map[string]any{"b": 2}})
	waitQueued(t, n, 1)
	h3 := asyncCall(a, "presence:heartbeat", map[string]any{"patchState": map[string]any{"a": 3}})
	waitQueued(t, n, 2)
	h4 := asyncCall(a, "presence:heartbeat", map[string]any{"epoch": "x"}) // invalid: answered alone
	waitQueued(t, n, 3)
	before := g.heartbeats.Load()
	release()

	for i, ch := range []<-chan map[string]any{h1, h2, h3} {
		if m := recvAck(t, ch); m["ok"] != true || m["changed"] != true {
			t.Fatalf("heartbeat %d: %v", i+1, m)
		}
	}
	if m := recvAck(t, h4); m["code"] != "PRESENCE_INVALID" {
		t.Fatalf("invalid heartbeat: %v", m)
	}
	if got := g.heartbeats.Load() - before; got != 1 {
		t.Fatalf("%d heartbeat scripts after the held one, want 1 for the two queued", got)
	}
	if coalesced.Load() != 2 {
		t.Fatalf("Coalesced hook saw %d heartbeats, want 2", coalesced.Load())
	}
	snap, err := n.svc.Snapshot(context.Background(), room)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range snap {
		if e.UserID != "a" {
			continue
		}
		var st map[string]any
		if err := json.Unmarshal(e.State, &st); err != nil {
			t.Fatal(err)
		}
		if st["a"] != float64(3) || st["b"] != float64(2) || st["keep"] != true {
			t.Fatalf("state %v, want a:3 (the later patch wins), b:2, keep:true", st)
		}
		return
	}
	t.Fatalf("a not in snapshot %v", snap)
}

// TestHeartbeatsOfDifferentEpochsAreNotMerged: fencing is per heartbeat.
func TestHeartbeatsOfDifferentEpochsAreNotMerged(t *testing.T) {
	n, g := startGated(t, socketio.Options{})
	room := "room-" + redistest.Prefix(t)
	a := dial(t, n.url)
	j := a.ok("presence:join", map[string]any{"roomId": room, "userId": "a"})
	epoch := num(j["self"].(map[string]any)["epoch"])

	arrived, release := g.hold()
	defer release()
	h1 := asyncCall(a, "presence:heartbeat", map[string]any{"epoch": epoch + 2})
	<-arrived
	h2 := asyncCall(a, "presence:heartbeat", map[string]any{"epoch": epoch, "patchState": map[string]any{"x": 1}}) // stale after h1
	waitQueued(t, n, 1)
	h3 := asyncCall(a, "presence:heartbeat", map[string]any{"epoch": epoch + 2, "patchState": map[string]any{"y": 1}})
	waitQueued(t, n, 2)
	release()
	if m := recvAck(t, h1); m["ok"] != true {
		t.Fatalf("h1: %v", m)
	}
	if m := recvAck(t, h2); m["code"] != "PRESENCE_STALE_EPOCH" {
		t.Fatalf("h2 (older epoch) merged or run wrongly: %v", m)
	}
	if m := recvAck(t, h3); m["ok"] != true || m["changed"] != true {
		t.Fatalf("h3: %v", m)
	}
}

// TestEventsPastTheBudgetAreShed: events that waited longer than the
// budget are answered OVERLOADED and never reach Redis.
func TestEventsPastTheBudgetAreShed(t *testing.T) {
	var overloaded atomic.Int64
	n, g := startGated(t, socketio.Options{
		EventBudget: 50 * time.Millisecond,
		Hooks: socketio.Hooks{Event: func(_, result string, _ time.Duration) {
			if result == socketio.ResultOverloaded {
				overloaded.Add(1)
			}
		}},
	})
	room := "room-" + redistest.Prefix(t)
	a := dial(t, n.url)
	a.ok("presence:join", map[string]any{"roomId": room, "userId": "a"})

	arrived, release := g.hold()
	defer release()
	h1 := asyncCall(a, "presence:heartbeat", map[string]any{"patchState": map[string]any{"a": 1}})
	<-arrived
	h2 := asyncCall(a, "presence:heartbeat", map[string]any{"patchState": map[string]any{"a": 2}})
	waitQueued(t, n, 1)
	m3 := asyncCall(a, "metadata:getChannel", map[string]any{"channelName": room, "channelType": "doc"})
	waitQueued(t, n, 2)
	time.Sleep(100 * time.Millisecond) // past the budget
	before := g.heartbeats.Load()
	release()
	if m := recvAck(t, h1); m["ok"] != true {
		t.Fatalf("h1 (running when the others queued): %v", m)
	}
	for _, ch := range []<-chan map[string]any{h2, m3} {
		if m := recvAck(t, ch); m["code"] != "OVERLOADED" || m["retryable"] != true {
			t.Fatalf("queued past the budget: %v, want OVERLOADED, retryable", m)
		}
	}
	if g.heartbeats.Load() != before {
		t.Fatal("a shed heartbeat reached Redis")
	}
	if overloaded.Load() != 2 {
		t.Fatalf("Hooks.Event saw %d overloaded, want 2", overloaded.Load())
	}
	// Not overloaded any more: served again.
	a.ok("presence:heartbeat")
}

// TestQueueBound: past MaxQueuedEvents an event is refused at once, so one
// socket cannot grow the server's memory while Redis is slow.
func TestQueueBound(t *testing.T) {
	n, g := startGated(t, socketio.Options{MaxQueuedEvents: 2, EventBudget: -1})
	room := "room-" + redistest.Prefix(t)
	a := dial(t, n.url)
	a.ok("presence:join", map[string]any{"roomId": room, "userId": "a"})

	arrived, release := g.hold()
	defer release()
	h1 := asyncCall(a, "presence:heartbeat")
	<-arrived
	var queued []<-chan map[string]any
	for i := range 2 {
		queued = append(queued, asyncCall(a, "presence:heartbeat"))
		waitQueued(t, n, i+1)
	}
	// The queue is full and the first heartbeat still held: these are
	// answered now.
	for range 5 {
		if m := recvAck(t, asyncCall(a, "presence:heartbeat")); m["code"] != "OVERLOADED" {
			t.Fatalf("over the queue bound: %v", m)
		}
	}
	release()
	for _, ch := range append([]<-chan map[string]any{h1}, queued...) {
		if m := recvAck(t, ch); m["ok"] != true {
			t.Fatalf("queued within the bound: %v", m)
		}
	}
}

// TestFloodingSocketIsDisconnected: a socket refused more than
// DisconnectAfterRefused events within a second is cut off; others stay.
func TestFloodingSocketIsDisconnected(t *testing.T) {
	var floods atomic.Int64
	n := startNode(t, redistest.Embedded(t), nodeConfig{Options: socketio.Options{
		HeartbeatRate:          socketio.Rate{PerSecond: 1, Burst: 1},
		DisconnectAfterRefused: 20,
		Hooks:                  socketio.Hooks{FloodDisconnect: func() { floods.Add(1) }},
	}})
	room := "room-" + redistest.Prefix(t)
	calm := dial(t, n.url)
	calm.ok("presence:join", map[string]any{"roomId": room, "userId": "calm"})
	flood := dial(t, n.url)
	flood.ok("presence:join", map[string]any{"roomId": room, "userId": "flood"})
	flood.ok("presence:heartbeat")
	if m := flood.fail("RATE_LIMITED", "presence:heartbeat"); m["retryable"] != true {
		t.Fatal(m)
	}
	for range 200 {
		if flood.c.Emit("presence:heartbeat") != nil {
			break
		}
	}
	select {
	case <-flood.c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the flooding socket is still connected")
	}
	if floods.Load() != 1 {
		t.Fatalf("FloodDisconnect hook: %d, want 1", floods.Load())
	}
	calm.waitEvent("presence:event", presenceEvent("leave", flood.id()))
	calm.ok("presence:heartbeat")
}
