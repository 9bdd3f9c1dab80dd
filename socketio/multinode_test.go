package socketio_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/internal/siotest"
)

// TestTwoNodes: two nodes on one Redis, a client on each: each sees the
// other's join, update, leave, disconnect and metadata events.
func TestTwoNodes(t *testing.T) {
	for _, srv := range redistest.Targets(t) {
		for _, backend := range []string{"rueidis", "goredis"} {
			t.Run(srv.Name+"/"+backend, func(t *testing.T) {
				t.Parallel()
				prefix := redistest.Prefix(t)
				na := startNode(t, srv, nodeConfig{Backend: backend, Prefix: prefix})
				nb := startNode(t, srv, nodeConfig{Backend: backend, Prefix: prefix, Heartbeat: "batch?window=5ms"})
				room := "room-" + prefix
				a := dial(t, na.url)
				b := dial(t, nb.url)
				a.ok("presence:join", map[string]any{"roomId": room, "userId": "alice"})
				jb := b.ok("presence:join", map[string]any{"roomId": room, "userId": "bob"})
				if len(jb["snapshot"].([]any)) != 2 {
					t.Fatalf("bob's snapshot %v", jb["snapshot"])
				}
				a.waitEvent("presence:event", presenceEvent("join", b.id()))
				b.ok("presence:heartbeat", map[string]any{"patchState": map[string]any{"x": 1}})
				a.waitEvent("presence:event", presenceEvent("update", b.id()))
				a.ok("presence:heartbeat", map[string]any{"patchState": map[string]any{"y": 2}})
				b.waitEvent("presence:event", presenceEvent("update", a.id()))
				b.ok("metadata:setChannel", ch(room, map[string]any{"data": []any{map[string]any{"key": "k", "value": "v"}}}))
				a.waitEvent("metadata:event", metaEvent("set", 1))
				a.ok("metadata:acquireLock", ch(room, map[string]any{"lockName": "l", "ttlMs": 5000}))
				b.fail("METADATA_LOCK", "metadata:acquireLock", ch(room, map[string]any{"lockName": "l", "ttlMs": 5000}))
				b.ok("presence:leave")
				a.waitEvent("presence:event", presenceEvent("leave", b.id()))
				b.ok("presence:join", map[string]any{"roomId": room, "userId": "bob"})
				id := b.id()
				b.close()
				a.waitEvent("presence:event", presenceEvent("leave", id))
			})
		}
	}
}

// TestShutdown: Binding.Shutdown makes every local socket leave (the other
// node sees it), refuses new sockets and events, and is idempotent.
func TestShutdown(t *testing.T) {
	srv := redistest.Embedded(t)
	prefix := redistest.Prefix(t)
	na := startNode(t, srv, nodeConfig{Prefix: prefix})
	nb := startNode(t, srv, nodeConfig{Prefix: prefix})
	room := "room-" + prefix
	watcher := dial(t, nb.url)
	watcher.ok("presence:join", map[string]any{"roomId": room, "userId": "w"})
	var ids []string
	var clients []*client
	for i := range 20 {
		c := dial(t, na.url)
		r := room
		if i%2 == 1 {
			r = room + "-other" // not watched: still must leave
		}
		c.ok("presence:join", map[string]any{"roomId": r, "userId": "u"})
		clients = append(clients, c)
		if i%2 == 0 {
			ids = append(ids, c.id())
		}
	}
	idle := dial(t, na.url) // never joined

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := na.binding.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := na.binding.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	for _, id := range ids {
		watcher.waitEvent("presence:event", presenceEvent("leave", id))
	}
	for _, r := range []string{room, room + "-other"} {
		snap, err := nb.svc.Snapshot(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range snap {
			if e.UserID == "u" {
				t.Fatalf("after shutdown room %s still has %+v", r, e)
			}
		}
	}
	if a := clients[0].fail("SHUTTING_DOWN", "presence:join", map[string]any{"roomId": room, "userId": "u"}); a["error"] != "server shutting down" {
		t.Fatalf("event after shutdown: %v", a)
	}
	idle.fail("SHUTTING_DOWN", "presence:heartbeat")
	var ce *siotest.ConnectError
	if _, err := tryDial(t, na.url); !errors.As(err, &ce) || ce.Message != "server shutting down" {
		t.Fatalf("new socket during shutdown: %v", err)
	}
	na.stop()
}

// TestNoGhosts: sockets that vanish while their join, heartbeat or leave
// is in flight leave nothing behind in presence.
func TestNoGhosts(t *testing.T) {
	for _, srv := range redistest.Targets(t) {
		t.Run(srv.Name, func(t *testing.T) {
			n := startNode(t, srv, nodeConfig{Heartbeat: "batch?window=20ms"})
			room := "room-" + redistest.Prefix(t)
			var wg sync.WaitGroup
			for i := range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := siotest.Dial(context.Background(), n.url, siotest.Options{})
					if err != nil {
						t.Error(err)
						return
					}
					if i%4 != 0 {
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						c.CallMap(ctx, "presence:join", map[string]any{"roomId": room, "userId": "u"})
						cancel()
					}
					// The next event is in flight when the connection drops.
					switch i % 4 {
					case 0:
						c.Emit("presence:join", map[string]any{"roomId": room, "userId": "u"})
					case 1:
						c.Emit("presence:heartbeat", map[string]any{"patchState": map[string]any{"i": i}})
					case 2:
						c.Emit("presence:leave")
						c.Emit("presence:join", map[string]any{"roomId": room, "userId": "u"})
					}
					if i%2 == 0 {
						c.Drop()
					} else {
						c.Close()
					}
				}()
			}
			wg.Wait()
			deadline := time.Now().Add(10 * time.Second)
			for {
				snap, err := n.svc.Snapshot(context.Background(), room)
				if err != nil {
					t.Fatal(err)
				}
				if len(snap) == 0 && n.binding.Connected() == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("10s after every socket left: %d entries remain (%+v), %d sockets connected", len(snap), snap, n.binding.Connected())
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
