package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/goredis"
	"github.com/realtime-message/presence/conformance"
	"github.com/realtime-message/presence/embedded"
)

// TestConformance is all it takes to prove your own backend: give the
// suite a factory of clients and it checks every registered heartbeat and
// metadata strategy through presence.Service on it. Here the store is the
// embedded Redis; point the factory at your own servers (standalone,
// cluster, a proxy) the same way.
func TestConformance(t *testing.T) {
	srv, err := embedded.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	conformance.Run(t, conformance.Target{
		Name: "metered(goredis)/embedded",
		NewClient: func(t testing.TB) backend.Client {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := goredis.New(ctx, goredis.Options{Addrs: []string{srv.Addr()}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return NewMetered(c)
		},
	})
}

func TestRun(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"heartbeat lua", " 1.00 round trips per heartbeat", "heartbeat pipeline", "heartbeat batch", "metadata lua", "metadata watch", "lost their compare-and-set"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	t.Log("\n" + out.String())
}
