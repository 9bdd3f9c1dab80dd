package strategy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"sync/atomic"

	"github.com/realtime-message/presence"
	_ "github.com/realtime-message/presence/backend/builtin" // registers rueidis and goredis
	"github.com/realtime-message/presence/embedded"
	"github.com/realtime-message/presence/strategy"
)

// counted is a heartbeat strategy of one's own: it counts heartbeats and
// leaves the work to the built-in "lua" strategy.
type counted struct {
	inner strategy.Heartbeat
	n     *atomic.Int64
}

func (c counted) Heartbeat(ctx context.Context, req strategy.HeartbeatRequest) (strategy.HeartbeatResult, error) {
	c.n.Add(1)
	return c.inner.Heartbeat(ctx, req)
}

func (c counted) Close() error { return c.inner.Close() }

var heartbeats atomic.Int64

// Register a strategy once, at init (a name registered twice panics),
// under a name and the parameters its spec accepts.
func init() {
	strategy.Heartbeats.Register("counted", []string{"inner"}, func(env strategy.Env, p *strategy.Params) (strategy.Heartbeat, error) {
		inner := "lua"
		if p.Has("inner") {
			inner = "batch" // "counted?inner=batch"
		}
		h, err := strategy.NewHeartbeat(inner, env)
		if err != nil {
			return nil, err
		}
		return counted{inner: h, n: &heartbeats}, nil
	})
}

// Config.Heartbeat selects a registered strategy like a built-in, and the
// conformance suite checks it with the others; a parameter the
// registration did not list is refused.
func ExampleRegistry_Register() {
	srv, err := embedded.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	svc, err := presence.Open(ctx, presence.Config{RedisURL: srv.URL(), Heartbeat: "counted"})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()

	j, err := svc.Join(ctx, "room-1", "conn-a", "alice", nil)
	if err != nil {
		log.Fatal(err)
	}
	before := heartbeats.Load()
	for range 3 {
		if _, err := svc.Heartbeat(ctx, "room-1", "conn-a", presence.HeartbeatParams{Epoch: &j.Epoch, PatchState: json.RawMessage(`{"typing":true}`)}); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(svc.Config().Heartbeat, heartbeats.Load()-before)
	_, err = presence.Open(ctx, presence.Config{RedisURL: srv.URL(), Heartbeat: "counted?window=5ms"})
	fmt.Println(errors.Is(err, presence.ErrInvalidArgument))
	// Output:
	// counted 3
	// true
}
