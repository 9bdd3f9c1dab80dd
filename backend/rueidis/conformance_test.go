package rueidis_test

import (
	"context"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	rb "github.com/realtime-message/presence/backend/rueidis"
	"github.com/realtime-message/presence/conformance"
	"github.com/realtime-message/presence/internal/redistest"
)

// TestConformance runs the presence conformance suite (every registered
// strategy, through presence.Service) on this adapter against a
// standalone server, a cluster and the embedded server.
func TestConformance(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			conformance.Run(t, conformance.Target{
				Name: "rueidis/" + s.Name,
				NewClient: func(t testing.TB) backend.Client {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					c, err := rb.New(ctx, rb.Options{Addrs: s.Addrs})
					if err != nil {
						t.Fatalf("rueidis.New(%s): %v", s.Name, err)
					}
					t.Cleanup(func() { c.Close() })
					return c
				},
				Prefix: func() string { return redistest.Prefix(t) },
			})
		})
	}
}
