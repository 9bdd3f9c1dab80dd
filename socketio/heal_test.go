package socketio_test

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/socketio"
)

// redisDo runs one command on srv and fails the test on an error reply.
func redisDo(t *testing.T, srv *redistest.Server, args ...string) {
	t.Helper()
	if err := srv.Do(t, args...).Error(); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
}

// waitMembers polls the room's snapshot until it holds exactly conns.
func waitMembers(t *testing.T, n *node, room string, within time.Duration, conns ...string) []presence.Entry {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		snap, err := n.svc.Snapshot(ctx, room)
		cancel()
		if err == nil && len(snap) == len(conns) {
			ok := true
			for i, e := range snap {
				ok = ok && e.ConnID == conns[i]
			}
			if ok {
				return snap
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("room %s: snapshot %v (err %v), want conns %v within %v", room, snap, err, conns, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sorted(a, b string) []string {
	if a < b {
		return []string{a, b}
	}
	return []string{b, a}
}

// A heartbeat whose conn Redis lost rejoins the socket, with its state and
// the heartbeat's patch, and acks ok with the new epoch; a stale epoch is
// still refused and never rejoins.
func TestHealOnHeartbeat(t *testing.T) {
	srv := redistest.NewStandalone(t)
	n := startNode(t, srv, nodeConfig{Options: socketio.Options{HealInterval: -1}})
	room := "room-" + redistest.Prefix(t)
	a, b := dial(t, n.url), dial(t, n.url)
	ja := a.ok("presence:join", map[string]any{"roomId": room, "userId": "alice", "state": map[string]any{"mood": "happy"}})
	epoch := num(ja["self"].(map[string]any)["epoch"])
	hb := a.ok("presence:heartbeat", map[string]any{"epoch": epoch, "patchState": map[string]any{"n": 1}})
	epoch = num(hb["epoch"])
	b.ok("presence:join", map[string]any{"roomId": room, "userId": "bob"})
	a.waitEvent("presence:event", presenceEvent("join", b.id()))

	redisDo(t, srv, "FLUSHALL")
	time.Sleep(2 * time.Millisecond) // the new epoch is at least the clock in ms
	hb = a.ok("presence:heartbeat", map[string]any{"epoch": epoch, "patchState": map[string]any{"typing": true}})
	if num(hb["epoch"]) <= epoch || hb["changed"] != true {
		t.Fatalf("heartbeat after FLUSHALL: ack %v, want ok, changed and an epoch above %d", hb, epoch)
	}
	ev := b.waitEvent("presence:event", func(m map[string]any) bool {
		return m["type"] == "join" && m["connId"] == a.id() && num(m["epoch"]) == num(hb["epoch"])
	})
	jsonEq(t, ev["state"], map[string]any{"mood": "happy", "n": 1, "typing": true})
	if got := n.binding.Healed(); got != 1 {
		t.Fatalf("Healed() = %d, want 1", got)
	}
	newEpoch := num(hb["epoch"])
	// The client adopts the ack's epoch; the old one still works for a
	// heartbeat sent before the ack arrived.
	a.ok("presence:heartbeat", map[string]any{"epoch": newEpoch})
	if got := num(a.ok("presence:heartbeat", map[string]any{"epoch": epoch})["epoch"]); got != newEpoch {
		t.Fatalf("heartbeat with the pre-rejoin epoch acked epoch %d, want %d", got, newEpoch)
	}

	// Older than the socket's own join: refused, nothing rejoined.
	a.fail(socketio.CodePresenceStaleEpoch, "presence:heartbeat", map[string]any{"epoch": epoch - 10_000})
	// Another connection took the conn id: refused, nothing rejoined.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	time.Sleep(2 * time.Millisecond)
	other, err := n.svc.Join(ctx, room, a.id(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	a.fail(socketio.CodePresenceStaleEpoch, "presence:heartbeat", map[string]any{"epoch": newEpoch})
	if got := n.binding.Healed(); got != 1 {
		t.Fatalf("Healed() = %d after stale heartbeats, want 1", got)
	}
	// bob, silent and with the watcher off, is still lost.
	snap := waitMembers(t, n, room, time.Second, a.id())
	if snap[0].Epoch != other.Epoch {
		t.Fatalf("a's epoch %d, want the other connection's %d", snap[0].Epoch, other.Epoch)
	}
}

const healReaper = 250 * time.Millisecond

// healDeadline is 2 reaper intervals plus slack for a loaded machine.
const healDeadline = 2*healReaper + 3*time.Second

func TestHealAfterFlush(t *testing.T) {
	srv := redistest.NewStandalone(t)
	testHealAfterLoss(t, srv, func() { redisDo(t, srv, "FLUSHALL") })
}

func TestHealAfterRestart(t *testing.T) {
	srv := redistest.NewStandalone(t)
	testHealAfterLoss(t, srv, func() { restartEmpty(t, srv) })
}

// testHealAfterLoss: after lose(), a socket that does not heartbeat is
// back without any client event, and the other member sees its join.
func testHealAfterLoss(t *testing.T, srv *redistest.Server, lose func()) {
	n := startNode(t, srv, nodeConfig{Reaper: healReaper, TTL: time.Minute})
	defer n.stop() // before a restarted server's cleanup stops it
	room := "room-" + redistest.Prefix(t)
	a, b := dial(t, n.url), dial(t, n.url)
	ja := a.ok("presence:join", map[string]any{"roomId": room, "userId": "alice"})
	epoch := num(ja["self"].(map[string]any)["epoch"])
	b.ok("presence:join", map[string]any{"roomId": room, "userId": "bob", "state": map[string]any{"k": "v"}})
	a.waitEvent("presence:event", presenceEvent("join", b.id()))

	lose()
	snap := waitMembers(t, n, room, healDeadline, sorted(a.id(), b.id())...)
	for _, e := range snap {
		if e.ConnID == b.id() {
			jsonEq(t, e.State, map[string]any{"k": "v"})
		}
	}
	a.waitEvent("presence:event", presenceEvent("join", b.id()))
	// The silent socket's client still holds its old epoch.
	hb := a.ok("presence:heartbeat", map[string]any{"epoch": epoch})
	if num(hb["epoch"]) <= epoch {
		t.Fatalf("heartbeat ack %v, want an epoch above %d", hb, epoch)
	}
}

// After the event subscriptions reconnected, local members are announced
// again: events published while they were down are lost for good.
func TestReannounceAfterResubscribe(t *testing.T) {
	for _, mode := range []string{presence.PubSubPattern, presence.PubSubChannels} {
		t.Run(mode, func(t *testing.T) {
			srv := redistest.NewStandalone(t)
			n := startNode(t, srv, nodeConfig{Reaper: healReaper, TTL: time.Minute, PubSub: mode})
			room := "room-" + redistest.Prefix(t)
			a, b := dial(t, n.url), dial(t, n.url)
			a.ok("presence:join", map[string]any{"roomId": room, "userId": "alice"})
			b.ok("presence:join", map[string]any{"roomId": room, "userId": "bob"})
			a.waitEvent("presence:event", presenceEvent("join", b.id()))

			redisDo(t, srv, "CLIENT", "KILL", "TYPE", "pubsub")
			// Nothing but the binding's re-announcement publishes this.
			a.waitEventFor(healDeadline, "presence:event", presenceEvent("join", b.id()))
		})
	}
}

// restartEmpty kills srv's redis-server and starts a new one on the same
// port without persistence, as a crash and restart would.
func restartEmpty(t *testing.T, srv *redistest.Server) {
	t.Helper()
	addr := srv.Addr()
	_, port, _ := net.SplitHostPort(addr)
	if err := syscall.Kill(srv.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cmd := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
			"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		if waitPing(addr, exited) {
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-exited
			})
			return
		}
		_ = cmd.Process.Kill()
		<-exited
		if time.Now().After(deadline) {
			t.Fatalf("could not restart redis-server on %s", addr)
		}
		time.Sleep(50 * time.Millisecond) // the old process may still hold the port
	}
}

// waitPing reports whether a server answers PONG on addr before exited.
func waitPing(addr string, exited <-chan struct{}) bool {
	for range 200 {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 7)
			k, _ := c.Read(buf)
			c.Close()
			if string(buf[:k]) == "+PONG\r\n" {
				return true
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// The state a rejoin restores has every acknowledged patch applied in
// order, however many there were (they are folded into the remembered
// state in batches).
func TestHealRestoresManyPatches(t *testing.T) {
	srv := redistest.NewStandalone(t)
	n := startNode(t, srv, nodeConfig{Options: socketio.Options{HealInterval: -1}})
	room := "room-" + redistest.Prefix(t)
	a := dial(t, n.url)
	a.ok("presence:join", map[string]any{"roomId": room, "userId": "alice", "state": map[string]any{"keep": "yes", "n": -1}})
	for i := range 75 {
		a.ok("presence:heartbeat", map[string]any{"patchState": map[string]any{"n": i, "k" + string(rune('a'+i%3)): i}})
	}
	redisDo(t, srv, "FLUSHALL")
	if hb := a.ok("presence:heartbeat", map[string]any{"patchState": map[string]any{"last": true}}); hb["changed"] != true {
		t.Fatalf("healing heartbeat: %v", hb)
	}
	snap := waitMembers(t, n, room, 5*time.Second, a.id())
	var st map[string]any
	if err := json.Unmarshal(snap[0].State, &st); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"keep": "yes", "n": float64(74), "ka": float64(72), "kb": float64(73), "kc": float64(74), "last": true}
	if len(st) != len(want) {
		t.Fatalf("state after the rejoin %v, want %v", st, want)
	}
	for k, v := range want {
		if st[k] != v {
			t.Fatalf("state after the rejoin %v, want %v", st, want)
		}
	}
}
