package backendtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/backendtest"
	"github.com/realtime-message/presence/backend/rueidis"
	"github.com/realtime-message/presence/embedded"
)

// A test of your adapter, in any module, describes the server with a
// Target and lets the suite ask for clients. rueidis.New stands for your
// adapter's constructor; list every master of a cluster in Addrs and set
// Cluster.
func ExampleRun() {
	TestBackend := func(t *testing.T) {
		srv, err := embedded.Start()
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		backendtest.Run(t, backendtest.Target{
			Name:     "mybackend/embedded",
			Addrs:    []string{srv.Addr()},
			Embedded: true, // the in-process server: its goroutines are not the adapter's
			NewClient: func(t testing.TB) backend.Client {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c, err := rueidis.New(ctx, rueidis.Options{Addrs: []string{srv.Addr()}})
				if err != nil {
					t.Fatal(err)
				}
				return c // the suite closes it
			},
		})
	}
	_ = TestBackend // a func TestBackend(t *testing.T) in your _test.go
}
