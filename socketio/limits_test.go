package socketio_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/socketio"
)

func TestRateLimit(t *testing.T) {
	n := startNode(t, redistest.Embedded(t), nodeConfig{Options: socketio.Options{
		HeartbeatRate: socketio.Rate{PerSecond: 2, Burst: 3},
		MetadataRate:  socketio.Rate{PerSecond: 2, Burst: 2},
		PresenceRate:  socketio.Rate{PerSecond: -1}, // unlimited
	}})
	room := "room-" + redistest.Prefix(t)
	a := dial(t, n.url)
	b := dial(t, n.url)
	for i := range 30 { // unlimited joins
		if i%2 == 0 {
			a.ok("presence:join", map[string]any{"roomId": room, "userId": "a"})
		} else {
			a.ok("presence:leave")
		}
	}
	a.ok("presence:join", map[string]any{"roomId": room, "userId": "a"})
	b.ok("presence:join", map[string]any{"roomId": room, "userId": "b"})
	for range 3 {
		a.ok("presence:heartbeat")
	}
	r := a.fail("RATE_LIMITED", "presence:heartbeat")
	if !strings.Contains(r["error"].(string), "rate limit") {
		t.Fatalf("rate-limited ack %v", r)
	}
	// Another socket is not affected, nor another class of event.
	b.ok("presence:heartbeat")
	a.ok("metadata:getChannel", ch(room, nil))
	a.ok("metadata:getChannel", ch(room, nil))
	a.fail("RATE_LIMITED", "metadata:getChannel", ch(room, nil))
	// Tokens come back with time.
	time.Sleep(600 * time.Millisecond)
	a.ok("presence:heartbeat")
}

func TestMessageSize(t *testing.T) {
	n := startNode(t, redistest.Embedded(t), nodeConfig{MaxMsg: 4096})
	room := "room-" + redistest.Prefix(t)
	a := dial(t, n.url)
	b := dial(t, n.url)
	a.ok("presence:join", map[string]any{"roomId": room, "userId": "a"})
	b.ok("presence:join", map[string]any{"roomId": room, "userId": "b"})
	// A message over the limit closes that connection (the transport
	// refuses it before parsing, as Node's socket.io does) ...
	if err := a.c.Emit("presence:heartbeat", map[string]any{"patchState": map[string]any{"big": strings.Repeat("x", 8000)}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection with an oversized message still open")
	}
	// ... its socket leaves presence ...
	b.waitEvent("presence:event", presenceEvent("leave", a.id()))
	// ... and nobody else notices.
	b.ok("presence:heartbeat", map[string]any{"patchState": map[string]any{"small": strings.Repeat("y", 1000)}})
}

func TestStateSizeLimit(t *testing.T) {
	n := startNode(t, redistest.Embedded(t), nodeConfig{})
	room := "room-" + redistest.Prefix(t)
	a := dial(t, n.url)
	big := map[string]any{"big": strings.Repeat("x", 70<<10)} // over the 64 KiB default
	a.fail("PRESENCE_INVALID", "presence:join", map[string]any{"roomId": room, "userId": "a", "state": big})
	a.ok("presence:join", map[string]any{"roomId": room, "userId": "a"})
	a.fail("PRESENCE_INVALID", "presence:heartbeat", map[string]any{"patchState": big})
	a.fail("METADATA_INVALID", "metadata:setChannel", ch(room, map[string]any{"data": []any{map[string]any{"key": strings.Repeat("k", 300), "value": "v"}}}))
	a.ok("presence:heartbeat")
}

// countingClient counts the commands, transactions and publishes that
// reach Redis.
type countingClient struct {
	backend.Client
	n atomic.Int64
}

func (c *countingClient) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	c.n.Add(1)
	return c.Client.Do(ctx, cmds...)
}

func (c *countingClient) Watch(ctx context.Context, keys []string, fn backend.TxFunc) ([]backend.Reply, error) {
	c.n.Add(1)
	return c.Client.Watch(ctx, keys, fn)
}

func (c *countingClient) Publish(ctx context.Context, channel, payload string) error {
	c.n.Add(1)
	return c.Client.Publish(ctx, channel, payload)
}

// TestInvalidPayloadsNeverReachRedis sends every kind of invalid payload
// and checks that no command reached Redis.
func TestInvalidPayloadsNeverReachRedis(t *testing.T) {
	cc := &countingClient{}
	n := startNode(t, redistest.Embedded(t), nodeConfig{Wrap: func(c backend.Client) backend.Client { cc.Client = c; return cc }})
	room := "room-" + redistest.Prefix(t)
	a := dial(t, n.url)
	a.ok("presence:join", map[string]any{"roomId": room, "userId": "a"})
	before := cc.n.Load()
	if before == 0 {
		t.Fatal("the counting client saw nothing of a join")
	}
	a.fail("PRESENCE_INVALID", "presence:join", map[string]any{"roomId": room})
	a.fail("PRESENCE_CONFLICT", "presence:join", map[string]any{"roomId": "a{b}", "userId": "a"}) // joined elsewhere: refused before the id is looked at
	a.fail("PRESENCE_INVALID", "presence:join", map[string]any{"roomId": room, "userId": "a", "state": 3})
	a.fail("PRESENCE_INVALID", "presence:heartbeat", map[string]any{"epoch": -3})
	a.fail("PRESENCE_INVALID", "presence:heartbeat", map[string]any{"epoch": float64(1 << 53)})
	a.fail("PRESENCE_INVALID", "presence:heartbeat", map[string]any{"patchState": []any{}})
	a.fail("PRESENCE_INVALID", "presence:heartbeat", map[string]any{"patchState": map[string]any{"big": strings.Repeat("x", 70<<10)}})
	a.fail("METADATA_INVALID", "metadata:setChannel", ch(room, map[string]any{"data": []any{map[string]any{"key": ""}}}))
	a.fail("METADATA_INVALID", "metadata:setChannel", ch(room, map[string]any{"data": []any{map[string]any{"key": "k"}, map[string]any{"key": "k"}}}))
	a.fail("METADATA_INVALID", "metadata:setChannel", ch(room, map[string]any{"data": []any{}, "options": map[string]any{"majorRevision": float64(1 << 53)}}))
	a.fail("METADATA_INVALID", "metadata:updateChannel", ch(room, map[string]any{"data": []any{}}))
	a.fail("METADATA_INVALID", "metadata:removeChannel", map[string]any{"channelName": room, "channelType": "a:b"})
	a.fail("METADATA_INVALID", "metadata:getChannel", map[string]any{"channelName": room})
	a.fail("METADATA_INVALID", "metadata:acquireLock", ch(room, map[string]any{"lockName": "l", "ttlMs": 0}))
	a.fail("METADATA_INVALID", "metadata:releaseLock", ch(room, map[string]any{"lockName": "{l}"}))
	a.fail("METADATA_INVALID", "metadata:getLock", ch(room, nil))
	if after := cc.n.Load(); after != before {
		t.Fatalf("invalid payloads sent %d Redis calls", after-before)
	}
}
