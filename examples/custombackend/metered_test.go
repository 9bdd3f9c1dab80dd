package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/backendtest"
	"github.com/realtime-message/presence/conformance"
	"github.com/realtime-message/presence/embedded"
)

// startRedis starts the embedded Redis for one test. Point the tests at
// your own servers (standalone, cluster, a proxy) the same way.
func startRedis(t *testing.T) *embedded.Server {
	srv, err := embedded.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// openMetered builds a client of the registered adapter, as
// Config.Backend = "metered" does.
func openMetered(t testing.TB, srv *embedded.Server) backend.Client {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := backend.Open(ctx, AdapterName, backend.OpenOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestBackend runs the port's adapter suite (backend/backendtest): reply
// shapes, pipelines, scripts and their NOSCRIPT fallback, transactions,
// pub/sub, deadlines, Close and goroutine leaks. A Target describes the
// server; the suite asks it for clients.
func TestBackend(t *testing.T) {
	srv := startRedis(t)
	backendtest.Run(t, backendtest.Target{
		Name:      "metered/embedded",
		Addrs:     []string{srv.Addr()},
		Embedded:  true,
		NewClient: func(t testing.TB) backend.Client { return openMetered(t, srv) },
	})
}

// TestConformance is all it takes to prove your backend under presence:
// give the suite a factory of clients and it checks every registered
// heartbeat and metadata strategy through presence.Service on it.
func TestConformance(t *testing.T) {
	srv := startRedis(t)
	conformance.Run(t, conformance.Target{
		Name:      "metered/embedded",
		NewClient: func(t testing.TB) backend.Client { return openMetered(t, srv) },
	})
}

// TestOpenByName: Config.Backend selects the registered adapter, as it
// selects a built-in.
func TestOpenByName(t *testing.T) {
	srv := startRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := presence.NewClient(ctx, presence.Config{Backend: AdapterName, RedisURL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, ok := c.(*Metered)
	if !ok {
		t.Fatalf("Backend %q built a %T, want *Metered", AdapterName, c)
	}
	svc, err := presence.New(m, presence.Config{ReaperInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if _, err := svc.Join(ctx, "room", "c1", "alice", json.RawMessage(`{}`)); err != nil {
		t.Fatal(err)
	}
	if got := m.Take(); got.RoundTrips == 0 {
		t.Error("a join through the registered adapter was not metered")
	}
}

func TestRun(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{`adapter "metered"`, "heartbeat lua", " 1.00 round trips per heartbeat", "heartbeat pipeline", "heartbeat batch", "metadata lua", "metadata watch", "lost their compare-and-set"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	t.Log("\n" + out.String())
}
