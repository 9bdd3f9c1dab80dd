package rueidis

import (
	"context"
	"testing"

	"github.com/redis/rueidis"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// BenchmarkReplyConversion: heartbeat.lua's reply converted as Do does
// (a []Reply and a slice for the array) against flatten, DoFlat's way.
func BenchmarkReplyConversion(b *testing.B) {
	s := redistest.Standalone(b)
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: s.Addrs, DisableCache: true})
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	cmd := backend.Cmd{Name: "EVAL", Pre: []string{"return {1, 0, 1780000000000}", "0"}}
	m, err := rc.Do(context.Background(), buildOne(rc.B(), cmd)).ToMessage()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("tree", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			out := make([]backend.Reply, 1)
			out[0] = normalize(cmd, toReply(&m))
			if out[0].Elems[2].Int != 1780000000000 {
				b.Fatal(out[0])
			}
		}
	})
	b.Run("flat", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var f backend.FlatReply
			flatten(&f, cmd, &m)
			if f.Inline[2].Int != 1780000000000 {
				b.Fatal(f.Full())
			}
		}
	})
}
