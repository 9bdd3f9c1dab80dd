package strategy

import (
	"testing"
	"time"

	"github.com/realtime-message/presence/core"
)

// BenchmarkHeartbeatEval: the heartbeat.lua call built from ids on every
// call, as before ConnKeys, against the lua strategy's builder with the
// conn's keys built once.
func BenchmarkHeartbeatEval(b *testing.B) {
	k := core.Keys{Prefix: "prs"}
	req := HeartbeatRequest{Room: "room-17", Conn: "conn-0042", HasEpoch: true, Epoch: 1_780_000_000_000, NowMs: 1_780_000_000_123}
	b.Run("ids", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = HeartbeatEval(k, 30000, req)
		}
	})
	b.Run("ConnKeys", func(b *testing.B) {
		eb := newEvalBuilder(Env{Keys: k, TTL: 30 * time.Second})
		r := req
		r.ConnKeys = k.ConnKeys(r.Room, r.Conn)
		b.ReportAllocs()
		for b.Loop() {
			_ = eb.call(r).Eval()
		}
	})
}
