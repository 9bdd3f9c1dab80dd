package strategy

import (
	"context"
	"strconv"

	"github.com/realtime-message/presence/core"
	"github.com/realtime-message/presence/luacall"

	"github.com/realtime-message/presence/backend"
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
	rep, err := l.evals.call(req).Run(ctx, l.env.Scripts)
	if err != nil {
		return HeartbeatResult{}, err
	}
	return heartbeatResult(rep)
}

func (l *luaHeartbeat) Close() error { return nil }

// HeartbeatEval is the heartbeat.lua call for req; the lua and batch
// strategies (and the benchmarks' ceiling) send exactly this, with an Env
// whose Publish is empty (classic PUBLISH). When req.ConnKeys fit req, its
// keys are used as they are: no key is built.
func HeartbeatEval(k core.Keys, ttlMs int64, req HeartbeatRequest) backend.Eval {
	var epoch string
	if req.HasEpoch {
		epoch = strconv.FormatInt(req.Epoch, 10)
	}
	return heartbeatCall(k, "PUBLISH", strconv.FormatInt(ttlMs, 10), strconv.FormatInt(req.NowMs, 10), epoch, req).Eval()
}

// evalBuilder is HeartbeatEval for one strategy, with what repeats across
// calls formatted once: the TTL always, the time while it stays in one
// millisecond, a conn's epoch while it is unchanged.
type evalBuilder struct {
	keys core.Keys
	pub  string
	ttl  string
	now  intCache
}

func newEvalBuilder(env Env) *evalBuilder {
	return &evalBuilder{keys: env.Keys, pub: env.publish(), ttl: strconv.FormatInt(env.TTL.Milliseconds(), 10)}
}

func (b *evalBuilder) call(req HeartbeatRequest) luacall.Heartbeat {
	var epoch string
	if req.HasEpoch {
		if ck := req.ConnKeys; ck.Fits(b.keys, req.Room, req.Conn) {
			epoch = ck.FormatEpoch(req.Epoch)
		} else {
			epoch = strconv.FormatInt(req.Epoch, 10)
		}
	}
	return heartbeatCall(b.keys, b.pub, b.ttl, b.now.format(req.NowMs), epoch, req)
}

func heartbeatCall(k core.Keys, pub, ttl, now, epoch string, req HeartbeatRequest) luacall.Heartbeat {
	c := luacall.Heartbeat{Conn: req.Conn, NowMs: now, TTLMs: ttl, Epoch: epoch, Room: req.Room, Pub: pub, Patch: req.Patch}
	if ck := req.ConnKeys; ck.Fits(k, req.Room, req.Conn) {
		c.ConnHash, c.LastSeen, c.ConnMeta, c.Seq, c.Events = ck.ConnKey(), ck.LastSeen(), ck.ConnMeta(), ck.Seq(), ck.RoomEvents()
	} else {
		c.ConnHash, c.LastSeen, c.ConnMeta, c.Seq, c.Events = k.Conn(req.Room, req.Conn), k.LastSeen(req.Room), k.ConnMeta(req.Room), k.Seq(req.Room), k.RoomEvents(req.Room)
	}
	return c
}

// ParseHeartbeatReply decodes heartbeat.lua's reply.
func ParseHeartbeatReply(r backend.Reply) (HeartbeatResult, error) {
	rep, err := luacall.DecodeHeartbeat(r)
	if err != nil {
		return HeartbeatResult{}, err
	}
	return heartbeatResult(rep)
}

// ParseHeartbeatFlat is ParseHeartbeatReply for a reply read by
// Scripts.RunFlat; it allocates only to report a malformed reply.
func ParseHeartbeatFlat(f *backend.FlatReply) (HeartbeatResult, error) {
	rep, err := luacall.DecodeHeartbeatFlat(f)
	if err != nil {
		return HeartbeatResult{}, err
	}
	return heartbeatResult(rep)
}

// heartbeatResult turns the script's refusals into the sentinel errors.
func heartbeatResult(rep luacall.HeartbeatReply) (HeartbeatResult, error) {
	switch rep.Case {
	case luacall.HeartbeatNotFound:
		return HeartbeatResult{}, core.ErrConnNotFound
	case luacall.HeartbeatStale:
		return HeartbeatResult{}, core.ErrStaleEpoch
	}
	return HeartbeatResult{Changed: rep.Changed, Epoch: rep.Epoch}, nil
}
