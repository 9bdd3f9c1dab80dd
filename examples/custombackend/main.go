// Command custombackend shows a backend of your own under the presence
// library: Metered, a decorator that meters round trips and commands,
// wrapped around the go-redis adapter, registered in the backend registry
// as "metered" so that Config.Backend selects it by name like a built-in.
// Any backend.Client that passes the adapter suite (backend/backendtest)
// and the conformance suite is a supported backend; metered_test.go runs
// both on this one:
//
//	go test ./examples/custombackend
//
// The program runs the same work under every built-in heartbeat and
// metadata strategy on the embedded Redis and prints what each cost on
// the wire:
//
//	go run ./examples/custombackend
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/realtime-message/presence"
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
	srv, err := embedded.Start()
	if err != nil {
		return err
	}
	defer srv.Close()
	// The registry builds the client Config.Backend names. presence.Open
	// would too, and own it; NewClient leaves it to us, so one Metered
	// serves every strategy below and its meter can be read.
	base := presence.Config{Backend: AdapterName, RedisURL: srv.URL(), KeyPrefix: "custombackend", ReaperInterval: -1}
	c, err := presence.NewClient(ctx, base)
	if err != nil {
		return err
	}
	defer c.Close()
	client := c.(*Metered)
	fmt.Fprintf(w, "embedded Redis at %s, adapter %q: go-redis wrapped in Metered\n\n", srv.Addr(), base.Backend)

	const conns, beats = 8, 25
	fmt.Fprintf(w, "%d conns × %d heartbeats each, concurrently:\n", conns, beats)
	for _, spec := range []string{"lua", "pipeline", "batch?window=5ms&max=100"} {
		cfg := base
		cfg.Heartbeat = spec
		svc, err := presence.New(client, cfg)
		if err != nil {
			return err
		}
		epochs := make([]int64, conns)
		for i := range conns {
			j, err := svc.Join(ctx, "room", fmt.Sprintf("c%d", i), fmt.Sprintf("user%d", i), json.RawMessage(`{"typing":false}`))
			if err != nil {
				svc.Close()
				return err
			}
			epochs[i] = j.Epoch
		}
		client.Take()
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range beats {
					patch := json.RawMessage(fmt.Sprintf(`{"typing":%v}`, n%2 == 0))
					if _, err := svc.Heartbeat(ctx, "room", fmt.Sprintf("c%d", i), presence.HeartbeatParams{Epoch: &epochs[i], PatchState: patch}); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			svc.Close()
			return err
		}
		report(w, "heartbeat "+spec, client.Take(), conns*beats, "heartbeat")
		for i := range conns {
			svc.Leave(ctx, "room", fmt.Sprintf("c%d", i))
		}
		svc.Close()
	}

	const writers, writes = 4, 10
	fmt.Fprintf(w, "\n%d writers × %d compare-and-set updates of one item, concurrently:\n", writers, writes)
	for _, spec := range []string{"lua", "watch?retries=5"} {
		cfg := base
		cfg.Metadata = spec
		svc, err := presence.New(client, cfg)
		if err != nil {
			return err
		}
		ch := presence.Channel{Type: "doc", Name: "d1"}
		if _, err := svc.SetMetadata(ctx, ch, []presence.Item{{Key: "title", Value: "v0"}}, presence.MetadataOptions{}); err != nil {
			svc.Close()
			return err
		}
		client.Take()
		var wg sync.WaitGroup
		var mu sync.Mutex
		won, lost := 0, 0
		for u := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range writes {
					g, err := svc.GetMetadata(ctx, ch)
					if err != nil {
						return
					}
					_, err = svc.UpdateMetadata(ctx, ch, []presence.Item{{Key: "title", Value: fmt.Sprintf("w%d-%d", u, n),
						Revision: presence.Rev(g.Metadata["title"].Revision)}}, presence.MetadataOptions{})
					mu.Lock()
					if err == nil {
						won++
					} else {
						lost++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		m := client.Take()
		report(w, "metadata "+spec, m, writers*writes, "get+update")
		fmt.Fprintf(w, "    %d updates won, %d lost their compare-and-set (ErrConflict), as they should\n", won, lost)
		svc.RemoveMetadata(ctx, ch, nil, presence.MetadataOptions{})
		svc.Close()
	}
	return nil
}

func report(w io.Writer, what string, m Meter, ops int, unit string) {
	var parts []string
	for _, n := range m.Names() {
		parts = append(parts, fmt.Sprintf("%s %d", n, m.Commands[n]))
	}
	fmt.Fprintf(w, "  %-34s %5.2f round trips per %s (%d in all): %s\n",
		what, float64(m.RoundTrips)/float64(ops), unit, m.RoundTrips, strings.Join(parts, ", "))
}
