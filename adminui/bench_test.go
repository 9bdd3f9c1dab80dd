package adminui_test

import (
	"context"
	"testing"
	"time"

	"github.com/realtime-message/presence/adminui"
	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

// BenchmarkHeartbeat is one socket's heartbeat round trip without the
// admin namespace, with it and nobody watching, and with an admin
// connected (the per-packet counters run):
//
//	go test -run '^$' -bench Heartbeat -count 6 ./adminui/
func BenchmarkHeartbeat(b *testing.B) {
	for _, c := range []struct {
		name    string
		opts    *adminui.Options
		watched bool
	}{
		{"off", nil, false},
		{"on", &adminui.Options{NoAuth: true}, false},
		{"watched", &adminui.Options{NoAuth: true}, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			url := serve(b, c.opts, socketio.Options{HeartbeatRate: socketio.Rate{PerSecond: -1}})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if c.watched {
				admin, err := siotest.Dial(ctx, url, siotest.Options{Namespace: "/admin"})
				if err != nil {
					b.Fatal(err)
				}
				defer admin.Close()
			}
			cl, err := siotest.Dial(ctx, url, siotest.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			j, err := cl.CallMap(ctx, socketio.EventJoin, map[string]any{"roomId": "r", "userId": "u"})
			if err != nil || j["ok"] != true {
				b.Fatalf("join: %v %v", j, err)
			}
			hb := map[string]any{"epoch": j["epoch"], "patchState": map[string]any{"n": 1}}
			for b.Loop() {
				if m, err := cl.CallMap(ctx, socketio.EventHeartbeat, hb); err != nil || m["ok"] != true {
					b.Fatalf("heartbeat: %v %v", m, err)
				}
			}
		})
	}
}
