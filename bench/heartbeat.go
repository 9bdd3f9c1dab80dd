package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/counting"
)

// UsersPerRoom is how many connections share a room in every scenario, as
// in the end-to-end load test (100 rooms × 5 users).
const UsersPerRoom = 5

// HeartbeatScenario is one heartbeat measurement through the Service.
type HeartbeatScenario struct {
	Table    string // TableSeed or TableHeartbeat
	Backend  string // "rueidis" or "goredis"
	Strategy string // heartbeat spec: "lua", "pipeline", "batch", "batch?window=…"
	Conns    int    // connections, each heartbeating from its own goroutine
	// Interval > 0 makes each connection heartbeat once per Interval (the
	// seed's scenario, open loop); 0 makes each send its next heartbeat as
	// soon as the last one is answered (closed loop, saturation).
	Interval time.Duration
	Warmup   time.Duration
	Duration time.Duration // measured window
	MaxOps   int64         // bound on heartbeats started (0: none beyond Duration)
	// Patch makes every heartbeat change the connection's state, so each
	// one also publishes an update event (the end-to-end scenario).
	Patch bool
}

// conn is a joined connection.
type conn struct {
	room, id string
	epoch    int64
}

// joinConns joins n connections, UsersPerRoom per room, concurrently.
func joinConns(ctx context.Context, svc *presence.Service, n int) ([]conn, error) {
	conns := make([]conn, n)
	err := parallel(ctx, n, func(ctx context.Context, i int) error {
		c := conn{room: "r" + strconv.Itoa(i/UsersPerRoom), id: "c" + strconv.Itoa(i)}
		j, err := svc.Join(ctx, c.room, c.id, "u"+strconv.Itoa(i), json.RawMessage(`{"n":0}`))
		if err != nil {
			return fmt.Errorf("bench: join %s/%s: %w", c.room, c.id, err)
		}
		c.epoch = j.Epoch
		conns[i] = c
		return nil
	})
	return conns, err
}

// leaveConns removes what joinConns added; errors are ignored (the keys
// carry a TTL and a prefix of their own anyway).
func leaveConns(svc *presence.Service, conns []conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	next := make(chan conn)
	for range min(len(conns), 32) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				if c.id != "" {
					svc.Leave(ctx, c.room, c.id)
				}
			}
		}()
	}
	for _, c := range conns {
		next <- c
	}
	close(next)
	wg.Wait()
}

// strategyName is a spec's name without parameters.
func strategyName(spec string) string {
	name, _, _ := strings.Cut(spec, "?")
	return name
}

// hbRig is a Service of its own, with a round-trip counter between it and
// the backend, and joined connections.
type hbRig struct {
	raw   backend.Client
	cc    *counting.Client
	svc   *presence.Service
	conns []conn
}

func newHBRig(ctx context.Context, t Target, backendName, spec string, n int) (*hbRig, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	raw, err := t.Connect(cctx, backendName)
	cancel()
	if err != nil {
		return nil, err
	}
	cc := counting.New(raw)
	svc, err := presence.New(cc, presence.Config{
		Heartbeat:      spec,
		KeyPrefix:      uniquePrefix("hb"),
		TTL:            time.Minute,
		ReaperInterval: -1,
		Logger:         quietLogger(),
	})
	if err != nil {
		raw.Close()
		return nil, err
	}
	r := &hbRig{raw: raw, cc: cc, svc: svc}
	r.conns, err = joinConns(ctx, svc, n)
	if err != nil {
		r.close()
		return nil, err
	}
	cc.Reset()
	return r, nil
}

// heartbeat sends conn i's heartbeat; patch > 0 patches the state to it.
func (r *hbRig) heartbeat(ctx context.Context, i int, patch int64) error {
	c := &r.conns[i%len(r.conns)]
	p := presence.HeartbeatParams{Epoch: &c.epoch}
	if patch > 0 {
		p.PatchState = json.RawMessage(`{"n":` + strconv.FormatInt(patch, 10) + `}`)
	}
	_, err := r.svc.Heartbeat(ctx, c.room, c.id, p)
	return err
}

func (r *hbRig) close() {
	leaveConns(r.svc, r.conns)
	r.svc.Close()
	r.raw.Close()
}

// RunHeartbeat joins sc.Conns connections on a Service of its own (with a
// round-trip counter between the Service and the backend), heartbeats them
// as sc says, and leaves them again.
func RunHeartbeat(ctx context.Context, t Target, sc HeartbeatScenario, probe *Probe) (Row, error) {
	row := Row{Table: sc.Table, Backend: sc.Backend, Strategy: strategyName(sc.Strategy), Concurrency: sc.Conns}
	// Every call below is bounded by the run's own deadline as well.
	runCtx, cancel := context.WithTimeout(ctx, sc.Warmup+sc.Duration+time.Minute)
	defer cancel()
	r, err := newHBRig(runCtx, t, sc.Backend, sc.Strategy, sc.Conns)
	if err != nil {
		return row, err
	}
	defer r.close()

	patches := make([]int64, len(r.conns)) // per worker: only its goroutine touches its entry
	var st0 presence.Stats
	afterWarm := func() { r.cc.Reset(); st0 = r.svc.Stats() }
	res := runLoad(runCtx, loadSpec{
		workers:  sc.Conns,
		interval: sc.Interval,
		warmup:   sc.Warmup,
		duration: sc.Duration,
		maxOps:   sc.MaxOps,
	}, probe, afterWarm, func(ctx context.Context, w int) (int, error) {
		var patch int64
		if sc.Patch {
			patches[w]++
			patch = patches[w]
		}
		if err := r.heartbeat(ctx, w, patch); err != nil {
			return 0, err
		}
		return 1, nil
	})
	r.svc.Flush(runCtx)
	st1 := r.svc.Stats()

	row.Ops, row.Errors, row.DurationS = res.ops, res.errs, res.window.Seconds()
	row.OpsPerSec = rate(res.ops, res.window)
	row.P50Ms, row.P99Ms = res.hist.QuantileMs(0.50), res.hist.QuantileMs(0.99)
	row.RedisCPUPct, row.ClientCPUPct, row.OtherCPUPct = res.cpu.redis, res.cpu.self, res.cpu.other
	// Over the whole run after the warm round, warmup included: every call
	// has returned by now, so the count is exact rather than cut at the
	// window's edges.
	rts := r.cc.RoundTrips()
	row.RoundTripsPerOp = ratio(rts, res.totalOps)
	if flushes := int64(st1.BatchFlushes - st0.BatchFlushes); flushes > 0 {
		row.RoundTripsPerBatch = ptr(ratio(rts, flushes))
		row.AvgBatch = ptr(ratio(int64(st1.BatchedHeartbeats-st0.BatchedHeartbeats), flushes))
	}
	row.setFirstError(res.firstError)
	return row, nil
}
