// Command redisclients runs one presence service on the Redis client the
// environment names, built by hand and passed to presence.New:
//
//	PRESENCE_BACKEND=rueidis go run ./examples/redisclients
//	PRESENCE_BACKEND=goredis go run ./examples/redisclients
//
// With no REDIS_URL it starts the embedded Redis.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/goredis"
	"github.com/realtime-message/presence/backend/rueidis"
	"github.com/realtime-message/presence/embedded"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func connect(ctx context.Context, name string, cfg presence.Config) (backend.Client, error) {
	switch name {
	case "", "rueidis":
		return rueidis.New(ctx, rueidis.Options{Addrs: cfg.Addrs, URL: cfg.RedisURL})
	case "goredis":
		return goredis.New(ctx, goredis.Options{Addrs: cfg.Addrs, URL: cfg.RedisURL})
	}
	return nil, fmt.Errorf("unknown PRESENCE_BACKEND %q (rueidis or goredis)", name)
}

func run(ctx context.Context, w io.Writer) error {
	cfg, err := presence.ConfigFromEnv()
	if err != nil {
		return err
	}
	if cfg.RedisURL == "" && len(cfg.Addrs) == 0 {
		srv, err := embedded.Start()
		if err != nil {
			return err
		}
		defer srv.Close()
		cfg.RedisURL = srv.URL()
	}
	client, err := connect(ctx, cfg.Backend, cfg)
	if err != nil {
		return err
	}
	defer client.Close() // presence.New leaves the client to us
	svc, err := presence.New(client, cfg)
	if err != nil {
		return err
	}
	defer svc.Close()
	fmt.Fprintf(w, "backend %T\n", client)

	events := make(chan presence.Event, 16)
	sub, err := svc.Subscribe(ctx, func(e presence.Event) { events <- e })
	if err != nil {
		return err
	}
	defer sub.Close()

	j, err := svc.Join(ctx, "room", "c1", "alice", json.RawMessage(`{"mood":"curious"}`))
	if err != nil {
		return err
	}
	if _, err := svc.Heartbeat(ctx, "room", "c1", presence.HeartbeatParams{Epoch: &j.Epoch, PatchState: json.RawMessage(`{"mood":"happy"}`)}); err != nil {
		return err
	}
	stale := j.Epoch - 1
	_, err = svc.Heartbeat(ctx, "room", "c1", presence.HeartbeatParams{Epoch: &stale})
	fmt.Fprintf(w, "stale heartbeat: %v\n", err)
	if err := svc.Leave(ctx, "room", "c1"); err != nil {
		return err
	}
	for range 3 {
		select {
		case e := <-events:
			fmt.Fprintf(w, "event %s %s/%s state=%s\n", e.Type, e.UserID, e.ConnID, e.State)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
