package strategy

import (
	"context"
	"fmt"
	"strconv"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/luasrc"
)

func init() {
	Heartbeats.Register("lua", nil, func(env Env, _ *Params) (Heartbeat, error) {
		return &luaHeartbeat{env: env}, nil
	})
}

// luaHeartbeat runs heartbeat.lua: one EVALSHA, so one round trip, per
// heartbeat.
type luaHeartbeat struct{ env Env }

func (l *luaHeartbeat) Heartbeat(ctx context.Context, req HeartbeatRequest) (HeartbeatResult, error) {
	r, err := l.env.Scripts.RunMany(ctx, HeartbeatEval(l.env.Keys, l.env.TTL.Milliseconds(), req))
	if err != nil {
		return HeartbeatResult{}, err
	}
	return ParseHeartbeatReply(r[0])
}

func (l *luaHeartbeat) Close() error { return nil }

// HeartbeatEval is the heartbeat.lua call for req; the lua and batch
// strategies (and the benchmarks' ceiling) send exactly this.
func HeartbeatEval(k Keys, ttlMs int64, req HeartbeatRequest) backend.Eval {
	epoch := ""
	if req.HasEpoch {
		epoch = strconv.FormatInt(req.Epoch, 10)
	}
	now := strconv.FormatInt(req.NowMs, 10)
	args := make([]string, 0, 6+2*len(req.Patch))
	args = append(args, req.Conn, now, strconv.FormatInt(ttlMs, 10), epoch, k.RoomEvents(req.Room), req.Room)
	for _, f := range req.Patch {
		args = append(args, f.Key, f.Value)
	}
	return backend.Eval{
		Script: luasrc.Heartbeat,
		Keys:   []string{k.Conn(req.Room, req.Conn), k.LastSeen(req.Room), k.ConnMeta(req.Room)},
		Args:   args,
	}
}

// ParseHeartbeatReply decodes heartbeat.lua's reply.
func ParseHeartbeatReply(r backend.Reply) (HeartbeatResult, error) {
	if err := r.Error(); err != nil {
		return HeartbeatResult{}, err
	}
	a, err := r.AsArray()
	if err != nil || len(a) < 2 {
		return HeartbeatResult{}, fmt.Errorf("strategy: unexpected heartbeat reply %v", r)
	}
	if ok, _ := a[0].AsInt(); ok == 1 {
		if len(a) != 3 {
			return HeartbeatResult{}, fmt.Errorf("strategy: unexpected heartbeat reply %v", r)
		}
		changed, err1 := a[1].AsInt()
		epoch, err2 := a[2].AsInt()
		if err1 != nil || err2 != nil {
			return HeartbeatResult{}, fmt.Errorf("strategy: unexpected heartbeat reply %v", r)
		}
		return HeartbeatResult{Changed: changed == 1, Epoch: epoch}, nil
	}
	switch code, _ := a[1].AsString(); code {
	case "NOTFOUND":
		return HeartbeatResult{}, ErrConnNotFound
	case "STALE":
		return HeartbeatResult{}, ErrStaleEpoch
	}
	return HeartbeatResult{}, fmt.Errorf("strategy: unexpected heartbeat reply %v", r)
}
