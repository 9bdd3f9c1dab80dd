package socketio_test

import (
	"strings"
	"testing"

	"github.com/realtime-message/presence/internal/redistest"
)

// TestProtocolMatrix runs the presence and metadata suites on every Redis
// (standalone, cluster, embedded), with both backends and every heartbeat
// and metadata strategy.
func TestProtocolMatrix(t *testing.T) {
	heartbeats := []string{"pipeline", "batch?window=5ms&max=50", "lua"}
	metadatas := []string{"lua", "watch?retries=5"}
	for _, srv := range redistest.Targets(t) {
		for _, backend := range []string{"rueidis", "goredis"} {
			for _, hb := range heartbeats {
				for _, md := range metadatas {
					name := srv.Name + "/" + backend + "/" + strings.Split(hb, "?")[0] + "/" + strings.Split(md, "?")[0]
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						n := startNode(t, srv, nodeConfig{Backend: backend, Heartbeat: hb, Metadata: md})
						t.Run("presence", func(t *testing.T) { presenceSuite(t, n) })
						t.Run("metadata", func(t *testing.T) { metadataSuite(t, n) })
					})
				}
			}
		}
	}
}
