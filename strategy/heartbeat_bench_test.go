package strategy

import (
	"context"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/core"
	"github.com/realtime-message/presence/luacall"
)

// flatStub answers every command with heartbeat.lua's success reply held
// inline, as the rueidis adapter does, so the benchmark measures the
// strategy's own work: building the call and decoding the reply.
type flatStub struct{}

func (flatStub) Do(context.Context, ...backend.Cmd) ([]backend.Reply, error) {
	return []backend.Reply{backend.ArrReply(backend.IntReply(1), backend.IntReply(0), backend.IntReply(7))}, nil
}

func (flatStub) DoFlat(context.Context, backend.Cmd) (backend.FlatReply, error) {
	f := backend.FlatReply{Reply: backend.Reply{Kind: backend.KindArray}, N: 3}
	f.Inline[0], f.Inline[1], f.Inline[2] = backend.IntReply(1), backend.IntReply(0), backend.IntReply(7)
	return f, nil
}

// BenchmarkLuaHeartbeat: one heartbeat through the lua strategy, a socket's
// ConnKeys given, with and without a patch, against a client that costs
// nothing.
func BenchmarkLuaHeartbeat(b *testing.B) {
	k := core.Keys{Prefix: "prs"}
	hb, err := NewHeartbeat("lua", Env{Scripts: backend.NewScripts(flatStub{}), Keys: k, TTL: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	req := HeartbeatRequest{Room: "room-17", Conn: "conn-0042", HasEpoch: true, Epoch: 7, NowMs: 1_780_000_000_123}
	req.ConnKeys = k.ConnKeys(req.Room, req.Conn)
	ctx := context.Background()
	b.Run("nopatch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := hb.Heartbeat(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("patch", func(b *testing.B) {
		r := req
		r.Patch = patch2
		b.ReportAllocs()
		for b.Loop() {
			if _, err := hb.Heartbeat(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

var patch2 = []luacall.KeyValue{{Key: "cursor", Value: `{"x":1,"y":2}`}, {Key: "typing", Value: "true"}}
