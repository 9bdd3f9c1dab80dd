package strategy

import (
	"context"
	"fmt"
	"strconv"

	"github.com/realtime-message/presence/core"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/luasrc"
)

func init() {
	Heartbeats.Register("lua", nil, func(env Env, _ *Params) (Heartbeat, error) {
		return &luaHeartbeat{env: env, evals: newEvalBuilder(env)}, nil
	})
}

// luaHeartbeat runs heartbeat.lua: one EVALSHA, so one round trip, per
// heartbeat.
type luaHeartbeat struct {
	env   Env
	evals *evalBuilder
}

var _ Heartbeat = (*luaHeartbeat)(nil)

func (l *luaHeartbeat) Heartbeat(ctx context.Context, req HeartbeatRequest) (HeartbeatResult, error) {
	f, err := l.env.Scripts.RunFlat(ctx, l.evals.eval(req))
	if err != nil {
		return HeartbeatResult{}, err
	}
	return ParseHeartbeatFlat(&f)
}

func (l *luaHeartbeat) Close() error { return nil }

// HeartbeatEval is the heartbeat.lua call for req; the lua and batch
// strategies (and the benchmarks' ceiling) send exactly this. When
// req.ConnKeys fit req, its keys are used as they are: no key is built.
func HeartbeatEval(k core.Keys, ttlMs int64, req HeartbeatRequest) backend.Eval {
	var epoch string
	if req.HasEpoch {
		epoch = strconv.FormatInt(req.Epoch, 10)
	}
	return heartbeatEval(k, strconv.FormatInt(ttlMs, 10), strconv.FormatInt(req.NowMs, 10), epoch, req)
}

// evalBuilder is HeartbeatEval for one strategy, with what repeats across
// calls formatted once: the TTL always, the time while it stays in one
// millisecond, a conn's epoch while it is unchanged.
type evalBuilder struct {
	keys core.Keys
	ttl  string
	now  intCache
}

func newEvalBuilder(env Env) *evalBuilder {
	return &evalBuilder{keys: env.Keys, ttl: strconv.FormatInt(env.TTL.Milliseconds(), 10)}
}

func (b *evalBuilder) eval(req HeartbeatRequest) backend.Eval {
	var epoch string
	if req.HasEpoch {
		if ck := req.ConnKeys; ck.Fits(b.keys, req.Room, req.Conn) {
			epoch = ck.FormatEpoch(req.Epoch)
		} else {
			epoch = strconv.FormatInt(req.Epoch, 10)
		}
	}
	return heartbeatEval(b.keys, b.ttl, b.now.format(req.NowMs), epoch, req)
}

func heartbeatEval(k core.Keys, ttl, now, epoch string, req HeartbeatRequest) backend.Eval {
	var keys []string
	var events string
	if ck := req.ConnKeys; ck.Fits(k, req.Room, req.Conn) {
		keys, events = []string{ck.ConnKey(), ck.LastSeen(), ck.ConnMeta()}, ck.RoomEvents()
	} else {
		keys, events = []string{k.Conn(req.Room, req.Conn), k.LastSeen(req.Room), k.ConnMeta(req.Room)}, k.RoomEvents(req.Room)
	}
	args := make([]string, 0, 6+2*len(req.Patch))
	args = append(args, req.Conn, now, ttl, epoch, events, req.Room)
	for _, f := range req.Patch {
		args = append(args, f.Key, f.Value)
	}
	return backend.Eval{Script: luasrc.Heartbeat, Keys: keys, Args: args}
}

// ParseHeartbeatReply decodes heartbeat.lua's reply.
func ParseHeartbeatReply(r backend.Reply) (HeartbeatResult, error) {
	if err := r.Error(); err != nil {
		return HeartbeatResult{}, err
	}
	a, err := r.AsArray()
	if err != nil {
		return HeartbeatResult{}, fmt.Errorf("strategy: unexpected heartbeat reply %v", r)
	}
	res, ok, err := parseHeartbeat(a)
	if !ok {
		return HeartbeatResult{}, fmt.Errorf("strategy: unexpected heartbeat reply %v", r)
	}
	return res, err
}

// ParseHeartbeatFlat is ParseHeartbeatReply for a reply read by
// Scripts.RunFlat; it allocates only to report a malformed reply.
func ParseHeartbeatFlat(f *backend.FlatReply) (HeartbeatResult, error) {
	if err := f.Error(); err != nil {
		return HeartbeatResult{}, err
	}
	a, err := f.Array()
	if err != nil {
		return HeartbeatResult{}, fmt.Errorf("strategy: unexpected heartbeat reply %v", f.Full())
	}
	res, ok, err := parseHeartbeat(a)
	if !ok {
		return HeartbeatResult{}, fmt.Errorf("strategy: unexpected heartbeat reply %v", f.Full())
	}
	return res, err
}

// parseHeartbeat decodes {1, changed, epoch} | {0, "NOTFOUND"} |
// {0, "STALE", stored}; ok is false for any other shape. It reports a
// malformed reply through ok rather than formatting a itself, so that a
// flat reply's inline elements do not escape to the heap.
func parseHeartbeat(a []backend.Reply) (res HeartbeatResult, ok bool, err error) {
	if len(a) < 2 {
		return res, false, nil
	}
	if code, _ := a[0].AsInt(); code == 1 {
		if len(a) != 3 {
			return res, false, nil
		}
		changed, err1 := a[1].AsInt()
		epoch, err2 := a[2].AsInt()
		if err1 != nil || err2 != nil {
			return res, false, nil
		}
		return HeartbeatResult{Changed: changed == 1, Epoch: epoch}, true, nil
	}
	switch code, _ := a[1].AsString(); code {
	case "NOTFOUND":
		return res, true, core.ErrConnNotFound
	case "STALE":
		return res, true, core.ErrStaleEpoch
	}
	return res, false, nil
}
