// Command strategies runs the same presence program with whichever
// heartbeat strategy the configuration names:
//
//	PRESENCE_HEARTBEAT=lua go run ./examples/strategies
//	PRESENCE_HEARTBEAT='batch?window=20ms' go run ./examples/strategies
//	PRESENCE_HEARTBEAT=pipeline go run ./examples/strategies
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
	"sync"
	"time"

	"github.com/realtime-message/presence"
	_ "github.com/realtime-message/presence/backend/builtin" // presence.Open selects rueidis or goredis by name
	"github.com/realtime-message/presence/embedded"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		log.Fatal(err)
	}
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
		fmt.Fprintln(w, "using the embedded Redis at", srv.Addr())
	}
	svc, err := presence.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer svc.Close()
	fmt.Fprintf(w, "heartbeat strategy %q\n", svc.Config().Heartbeat)

	// Ten users in one room, each heartbeating 20 times with a state patch,
	// concurrently: a batching strategy coalesces them.
	const users, beats = 10, 20
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, user := fmt.Sprintf("conn-%d", u), fmt.Sprintf("user-%d", u)
			j, err := svc.Join(ctx, "lobby", conn, user, json.RawMessage(`{"cursor":0}`))
			if err != nil {
				errs <- err
				return
			}
			for i := 1; i <= beats; i++ {
				patch := json.RawMessage(fmt.Sprintf(`{"cursor":%d}`, i))
				if _, err := svc.Heartbeat(ctx, "lobby", conn, presence.HeartbeatParams{Epoch: &j.Epoch, PatchState: patch}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	took := time.Since(start)
	snap, err := svc.Snapshot(ctx, "lobby")
	if err != nil {
		return err
	}
	st := svc.Stats()
	fmt.Fprintf(w, "%d heartbeats in %v; %d changed state; room has %d connections\n",
		users*beats, took.Round(time.Millisecond), st.HeartbeatsChanged, len(snap))
	if st.BatchFlushes > 0 {
		fmt.Fprintf(w, "batches sent: %d (%.1f heartbeats per batch)\n", st.BatchFlushes, float64(st.BatchedHeartbeats)/float64(st.BatchFlushes))
	}
	return nil
}
