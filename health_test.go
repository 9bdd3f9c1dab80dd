package presence_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/realtime-message/presence"
)

// TestHealth: every master is checked (with cluster_state on a cluster)
// and every subscription of the service is listed, alive; a closed
// subscription is no longer listed.
func TestHealth(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), presence.Config{})
		sub, err := s.Subscribe(context.Background(), func(presence.Event) {})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		checks, ok := s.Health(ctx)
		if !ok {
			t.Fatalf("not healthy: %+v", checks)
		}
		count := func(prefix string) int {
			n := 0
			for _, c := range checks {
				if strings.HasPrefix(c.Name, prefix) {
					n++
				}
			}
			return n
		}
		masters := len(tg.server.Addrs)
		if count("redis ") != masters || count("subscription ") != 1 {
			t.Fatalf("checks %+v, want %d masters and 1 subscription", checks, masters)
		}
		if tg.server.Cluster && count("cluster_state ") != masters {
			t.Fatalf("checks %+v, want cluster_state of %d masters", checks, masters)
		}
		sub.Close()
		if checks, _ = s.Health(ctx); count("subscription ") != 0 {
			t.Fatalf("closed subscription still listed: %+v", checks)
		}
	})
}
