package presence_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/realtime-message/presence"
	_ "github.com/realtime-message/presence/backend/builtin" // registers rueidis and goredis
	"github.com/realtime-message/presence/embedded"
)

// openExample opens a Service on a fresh embedded Redis; stop closes both.
func openExample() (svc *presence.Service, stop func()) {
	srv, err := embedded.Start()
	if err != nil {
		log.Fatal(err)
	}
	svc, err = presence.Open(context.Background(), presence.Config{RedisURL: srv.URL()})
	if err != nil {
		srv.Close()
		log.Fatal(err)
	}
	return svc, func() { svc.Close(); srv.Close() }
}

// Join puts a connection in a room and returns its epoch, the token that
// fences its later heartbeats, with the room as it now is.
func ExampleService_Join() {
	svc, stop := openExample()
	defer stop()
	ctx := context.Background()

	if _, err := svc.Join(ctx, "room-1", "conn-a", "alice", json.RawMessage(`{"typing":false}`)); err != nil {
		log.Fatal(err)
	}
	j, err := svc.Join(ctx, "room-1", "conn-b", "bob", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("epoch set:", j.Epoch > 0)
	for _, e := range j.Snapshot {
		fmt.Println(e.ConnID, e.UserID, string(e.State))
	}
	// Output:
	// epoch set: true
	// conn-a alice {"typing":false}
	// conn-b bob {}
}

// Heartbeat keeps a connection alive and merges a state patch; a
// heartbeat carrying an epoch older than the connection's current one (a
// stale tab, a reconnect that lost the race) is refused and writes
// nothing.
func ExampleService_Heartbeat() {
	svc, stop := openExample()
	defer stop()
	ctx := context.Background()

	first, err := svc.Join(ctx, "room-1", "conn-a", "alice", json.RawMessage(`{"typing":false,"tab":1}`))
	if err != nil {
		log.Fatal(err)
	}
	r, err := svc.Heartbeat(ctx, "room-1", "conn-a", presence.HeartbeatParams{
		Epoch:      &first.Epoch,
		PatchState: json.RawMessage(`{"typing":true}`),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("changed:", r.Changed)

	// The same connection id joins again (a reconnect), with a higher
	// epoch: the first one is stale now.
	if _, err := svc.Join(ctx, "room-1", "conn-a", "alice", json.RawMessage(`{"tab":2}`)); err != nil {
		log.Fatal(err)
	}
	_, err = svc.Heartbeat(ctx, "room-1", "conn-a", presence.HeartbeatParams{
		Epoch:      &first.Epoch,
		PatchState: json.RawMessage(`{"typing":false}`),
	})
	fmt.Println("stale:", errors.Is(err, presence.ErrStaleEpoch))

	snap, err := svc.Snapshot(ctx, "room-1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(snap[0].State))
	// Output:
	// changed: true
	// stale: true
	// {"tab":2}
}

// Subscribe delivers the presence events of every room, published by any
// node sharing the Redis, in order.
func ExampleService_Subscribe() {
	svc, stop := openExample()
	defer stop()
	ctx := context.Background()

	events := make(chan presence.Event, 8)
	sub, err := svc.Subscribe(ctx, func(e presence.Event) { events <- e })
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	j, err := svc.Join(ctx, "room-1", "conn-a", "alice", nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := svc.Heartbeat(ctx, "room-1", "conn-a", presence.HeartbeatParams{Epoch: &j.Epoch, PatchState: json.RawMessage(`{"typing":true}`)}); err != nil {
		log.Fatal(err)
	}
	if err := svc.Leave(ctx, "room-1", "conn-a"); err != nil {
		log.Fatal(err)
	}
	for range 3 {
		select {
		case e := <-events:
			fmt.Println(e.Type, e.RoomID, e.UserID, e.ConnID, string(e.State))
		case <-time.After(5 * time.Second):
			log.Fatal("no event")
		}
	}
	// Output:
	// join room-1 alice conn-a {}
	// update room-1 alice conn-a {"typing":true}
	// leave room-1 alice conn-a {"typing":true}
}
