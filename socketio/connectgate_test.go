package socketio_test

import (
	"testing"

	"github.com/realtime-message/presence/internal/redistest"
)

// TestFirstEventRightAfterConnect sends an event as soon as the CONNECT
// answer arrives, as SDKs that join in their "connect" handler do. Without
// the connect gate the library reads that event before it has recorded
// the socket and drops the connection (a few percent of connections on
// loopback); with it every event is answered.
func TestFirstEventRightAfterConnect(t *testing.T) {
	n := startNode(t, redistest.Embedded(t), nodeConfig{})
	for i := range 200 {
		c, err := tryDial(t, n.url)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.fail("PRESENCE_NOT_JOINED", "presence:heartbeat")
		c.close()
	}
}
