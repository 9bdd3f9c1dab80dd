package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/realtime-message/presence/core"

	rr "github.com/redis/rueidis"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/strategy"
)

// CeilingScenario drives heartbeat.lua as raw pipelined EVALSHA through
// rueidis, with no Service, validation, strategy or adapter on the way: the
// exact call strategy.HeartbeatEval builds for the lua strategy, on the
// same joined connections. It is the most this Redis can do with that
// script, the yardstick of every heartbeat row.
type CeilingScenario struct {
	Conns int // connections heartbeated (and operations in flight)
	// Batch 0: one goroutine per connection, one Do per heartbeat, and
	// rueidis's auto-pipelining coalesces them. Batch > 0: Conns/Batch
	// goroutines, each sending DoMulti of Batch heartbeats (explicit
	// pipelines, the least client work per heartbeat).
	Batch    int
	Warmup   time.Duration
	Duration time.Duration
	MaxOps   int64
}

// ceilRig is joined connections (joined through a lua Service on rueidis,
// not measured) and a raw rueidis client to heartbeat them with.
type ceilRig struct {
	svc   *presence.Service
	rc    rr.Client
	keys  core.Keys
	conns []conn
}

func newCeilRig(ctx context.Context, t Target, n int) (*ceilRig, error) {
	prefix := uniquePrefix("ceil")
	cfg := t.Config("rueidis")
	cfg.KeyPrefix, cfg.ReaperInterval, cfg.TTL, cfg.Logger = prefix, -1, time.Minute, quietLogger()
	svc, err := presence.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	r := &ceilRig{svc: svc, keys: core.Keys{Prefix: prefix}}
	if r.conns, err = joinConns(ctx, svc, n); err != nil {
		r.close()
		return nil, err
	}
	opt, err := t.rueidisOption()
	if err == nil {
		r.rc, err = rr.NewClient(opt)
	}
	if err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// cmd is conn i's heartbeat as the lua strategy sends it.
func (r *ceilRig) cmd(i int) rr.Completed {
	c := &r.conns[i%len(r.conns)]
	e := strategy.HeartbeatEval(r.keys, time.Minute.Milliseconds(), strategy.HeartbeatRequest{
		Room: c.room, Conn: c.id, HasEpoch: true, Epoch: c.epoch, NowMs: time.Now().UnixMilli(),
	})
	return r.rc.B().Evalsha().Sha1(e.Script.SHA1).Numkeys(int64(len(e.Keys))).Key(e.Keys...).Arg(e.Args...).Build()
}

func checkCeiling(res rr.RedisResult) error {
	a, err := res.ToArray()
	if err != nil {
		return err
	}
	if ok, _ := a[0].AsInt64(); ok != 1 {
		return fmt.Errorf("bench: heartbeat.lua refused a ceiling heartbeat: %v", a)
	}
	return nil
}

// heartbeat sends conn i's heartbeat alone (rueidis pipelines concurrent
// calls by itself).
func (r *ceilRig) heartbeat(ctx context.Context, i int) error {
	return checkCeiling(r.rc.Do(ctx, r.cmd(i)))
}

// heartbeats sends the heartbeats of conns [from, to) as one DoMulti.
func (r *ceilRig) heartbeats(ctx context.Context, from, to int) (int, error) {
	cmds := make(rr.Commands, 0, to-from)
	for i := from; i < to; i++ {
		cmds = append(cmds, r.cmd(i))
	}
	for _, res := range r.rc.DoMulti(ctx, cmds...) {
		if err := checkCeiling(res); err != nil {
			return 0, err
		}
	}
	return len(cmds), nil
}

func (r *ceilRig) close() {
	if r.rc != nil {
		r.rc.Close()
	}
	leaveConns(r.svc, r.conns)
	r.svc.Close()
}

// RunCeiling measures sc.
func RunCeiling(ctx context.Context, t Target, sc CeilingScenario, probe *Probe) (Row, error) {
	label := StrategyCeilingPipeline
	workers := sc.Conns
	if sc.Batch > 0 {
		label = StrategyCeilingMulti
		workers = max(1, sc.Conns/sc.Batch)
	}
	row := Row{Table: TableHeartbeat, Backend: BackendRaw, Strategy: label, Concurrency: sc.Conns}
	runCtx, cancel := context.WithTimeout(ctx, sc.Warmup+sc.Duration+time.Minute)
	defer cancel()
	r, err := newCeilRig(runCtx, t, sc.Conns)
	if err != nil {
		return row, err
	}
	defer r.close()
	op := func(ctx context.Context, w int) (int, error) {
		if err := r.heartbeat(ctx, w); err != nil {
			return 0, err
		}
		return 1, nil
	}
	if sc.Batch > 0 {
		op = func(ctx context.Context, w int) (int, error) {
			return r.heartbeats(ctx, w*sc.Batch, min((w+1)*sc.Batch, len(r.conns)))
		}
	}
	res := runLoad(runCtx, loadSpec{workers: workers, warmup: sc.Warmup, duration: sc.Duration, maxOps: sc.MaxOps}, probe, nil, op)
	row.Ops, row.Errors, row.DurationS = res.ops, res.errs, res.window.Seconds()
	row.OpsPerSec = rate(res.ops, res.window)
	row.P50Ms, row.P99Ms = res.hist.QuantileMs(0.50), res.hist.QuantileMs(0.99)
	row.RedisCPUPct, row.ClientCPUPct, row.OtherCPUPct = res.cpu.redis, res.cpu.self, res.cpu.other
	row.RoundTripsPerOp = 1 // one EVALSHA each; rueidis writes many per syscall
	if sc.Batch > 0 {
		row.RoundTripsPerOp = 1 / float64(sc.Batch)
	}
	row.setFirstError(res.firstError)
	return row, nil
}
