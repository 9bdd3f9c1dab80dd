package conformance_test

import (
	"context"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/goredis"
	"github.com/realtime-message/presence/conformance"
	"github.com/realtime-message/presence/embedded"
)

// A test of your adapter runs the suite with a factory of its clients:
// every registered heartbeat and metadata strategy is then checked through
// presence.Service on it (fencing, compare-and-set, rapid state machines,
// porcupine linearizability). goredis.New stands for your adapter's
// constructor, the embedded server for the servers you test against.
func ExampleRun() {
	TestConformance := func(t *testing.T) {
		srv, err := embedded.Start()
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		conformance.Run(t, conformance.Target{
			Name: "mybackend/embedded",
			NewClient: func(t testing.TB) backend.Client {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c, err := goredis.New(ctx, goredis.Options{URL: srv.URL()})
				if err != nil {
					t.Fatal(err)
				}
				return c // the suite closes it
			},
		})
	}
	_ = TestConformance // a func TestConformance(t *testing.T) in your _test.go
}
