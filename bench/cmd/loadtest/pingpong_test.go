package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

// The load generator's clients keep their sockets across many server
// pings (short intervals here, so thousands of pings run).
func TestClientsAnswerPings(t *testing.T) {
	for _, client := range []string{"socketio", "raw"} {
		t.Run(client, func(t *testing.T) {
			opts := socketio.ServerOptions(0)
			opts.SetPingInterval(20 * time.Millisecond)
			// Generous, so a loaded machine's scheduling delays are not
			// taken for an unanswered ping; a client that never answers is
			// still dropped well within the hold.
			opts.SetPingTimeout(3 * time.Second)
			io := socket.NewServer(nil, opts)
			var dropped atomic.Int64
			reasons := make(chan string, 100)
			io.On("connection", func(args ...any) {
				s := args[0].(*socket.Socket)
				s.On("disconnect", func(a ...any) {
					dropped.Add(1)
					if len(a) > 0 {
						if r, ok := a[0].(string); ok {
							select {
							case reasons <- r:
							default:
							}
						}
					}
				})
			})
			url, hs := siotest.Listen(t, io)
			defer func() { io.Close(nil); hs.Close() }()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var ts []transport
			for i := range 30 {
				tr, err := dialers[client](ctx, url, "u"+string(rune('a'+i)), 5*time.Second, func(presenceEvent) {})
				if err != nil {
					t.Fatal(err)
				}
				ts = append(ts, tr)
			}
			time.Sleep(8 * time.Second)
			if n := dropped.Load(); n > 0 {
				var rs []string
				for len(reasons) > 0 {
					rs = append(rs, <-reasons)
				}
				t.Errorf("%d of %d sockets disconnected by the server: %v", n, len(ts), rs)
			}
			for _, tr := range ts {
				tr.close()
			}
		})
	}
}
