package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// Options select and bound the scenarios of Run. Every scenario is bounded
// in time (its durations) and in count (MaxOps).
type Options struct {
	Target Target
	// RedisDelay is the one-way delay a DelayProxy in front of Target adds
	// each way (the caller starts the proxy); rows record it.
	RedisDelay time.Duration
	Backends   []string // default rueidis, goredis

	// Heartbeat strategies (specs) of the seed and saturation tables.
	Strategies []string // default lua, pipeline, batch
	// Patch makes every heartbeat of the seed and saturation tables change
	// its connection's state, so each also takes the room's next seq and
	// publishes an update event.
	Patch bool

	// The seed's scenario: SeedConns connections, each heartbeating once
	// per SeedInterval, for SeedDuration.
	SeedConns    int
	SeedInterval time.Duration
	SeedDuration time.Duration

	// Saturation: closed loop at each concurrency, Warmup then Duration.
	Concurrency []int
	Warmup      time.Duration
	Duration    time.Duration

	// Ceiling: raw pipelined EVALSHA at these concurrencies (auto-pipelined)
	// and as DoMulti batches of CeilingBatch; the ceiling is the best.
	CeilingConcurrency []int
	CeilingBatch       int
	CeilingTwice       bool // measure the ceiling at the start and again at the end

	// Metadata: MetaWriters writers per strategy for MetaDuration.
	MetaStrategies []string // default lua, watch, app-cas
	MetaWriters    int
	MetaRetry      []string // writer policies after a conflict, each run for every strategy (default backoff)
	MetaDuration   time.Duration

	// User index cost: heartbeat and join+leave at UserIndexConns, the
	// index off and on taking turns of UserIndexSlice, UserIndexPairs
	// times each (0: skipped). UserIndexOnly runs these rows alone.
	UserIndexPairs int
	UserIndexSlice time.Duration
	UserIndexConns int
	UserIndexOnly  bool

	// MaxOps bounds the operations of any one scenario.
	MaxOps int64

	// Progress receives one line per scenario as it starts and ends (nil:
	// none).
	Progress io.Writer
}

// DefaultOptions is the full run (about 6 minutes on 2 cores).
func DefaultOptions() Options {
	return Options{
		Backends:           []string{"rueidis", "goredis"},
		Strategies:         []string{"lua", "pipeline", "batch"},
		SeedConns:          100,
		SeedInterval:       5 * time.Second,
		SeedDuration:       20 * time.Second,
		Concurrency:        []int{16, 64, 256, 1024},
		Warmup:             time.Second,
		Duration:           5 * time.Second,
		CeilingConcurrency: []int{256, 1024},
		CeilingBatch:       64,
		CeilingTwice:       true,
		MetaStrategies:     []string{"lua", "watch", StrategyAppCAS},
		MetaWriters:        20,
		MetaRetry:          []string{RetryBackoff},
		MetaDuration:       10 * time.Second,
		UserIndexPairs:     80,
		UserIndexSlice:     200 * time.Millisecond,
		UserIndexConns:     64,
		MaxOps:             50_000_000,
	}
}

// QuickOptions is the -quick run: the same scenarios, shorter, the
// ceiling measured once (about 45 s on 2 cores).
func QuickOptions() Options {
	o := DefaultOptions()
	o.SeedDuration = 2 * time.Second
	o.Warmup = 150 * time.Millisecond
	o.Duration = 650 * time.Millisecond
	o.MetaDuration = 800 * time.Millisecond
	o.CeilingTwice = false
	o.UserIndexPairs = 10
	o.UserIndexSlice = 100 * time.Millisecond
	return o
}

// Scale multiplies every duration by f (smoke tests use a small f).
func (o Options) Scale(f float64) Options {
	for _, d := range []*time.Duration{&o.SeedDuration, &o.Warmup, &o.Duration, &o.MetaDuration, &o.UserIndexSlice} {
		*d = time.Duration(float64(*d) * f)
	}
	return o
}

// Estimate is how long Run will take, roughly, setup excluded.
func (o Options) Estimate() time.Duration {
	nb, ns := len(o.Backends), len(o.Strategies)
	d := time.Duration(nb*ns) * o.SeedDuration
	d += time.Duration(nb*ns*len(o.Concurrency)) * (o.Warmup + o.Duration)
	nc := len(o.CeilingConcurrency) + 1
	if o.CeilingTwice {
		nc *= 2
	}
	d += time.Duration(nc) * (o.Warmup + o.Duration)
	d += time.Duration(nb*len(o.MetaStrategies)*max(1, len(o.MetaRetry))) * o.MetaDuration
	ui := time.Duration(o.UserIndexPairs*nb*2*2) * (o.UserIndexSlice * 6 / 5)
	if o.UserIndexOnly {
		return ui
	}
	return d + ui
}

// Env describes where the figures were taken.
type Env struct {
	Go           string  `json:"go"`
	GOMAXPROCS   int     `json:"gomaxprocs"`
	NumCPU       int     `json:"num_cpu"`
	RedisVersion string  `json:"redis_version"`
	Target       string  `json:"target"`
	RedisDelayUs float64 `json:"redis_delay_us,omitempty"` // one-way delay added each way by the bench's proxy
	// Median PING round trip to the server itself and through the proxy,
	// µs, when there is one: what the delay added in fact.
	PingDirectUs float64 `json:"ping_direct_us,omitempty"`
	PingProxyUs  float64 `json:"ping_proxy_us,omitempty"`
	LoadAvg      string  `json:"load_avg_before"` // /proc/loadavg when the run started
	Started      string  `json:"started"`
	ElapsedS     float64 `json:"elapsed_s"`
}

// Results are the rows of one Run.
type Results struct {
	Env     Env
	Rows    []Row
	Ceiling float64 // the best ceiling row's ops/s
	Options Options
}

// LoadAvg returns the first three fields of /proc/loadavg, or "" where
// there is none.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

type job struct {
	label string
	run   func(ctx context.Context) (Row, error)
}

// Run runs the ceiling, the seed's heartbeat scenario, saturation and the
// metadata scenario, in that order, and fills in every heartbeat row's
// ratio to the ceiling. A scenario that cannot run at all fails Run; one
// whose operations fail reports them in Row.Errors.
func Run(ctx context.Context, o Options) (*Results, error) {
	probe, err := NewProbe(o.Target)
	if err != nil {
		return nil, err
	}
	defer probe.Close()
	res := &Results{Options: o, Env: Env{
		Go: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(),
		RedisVersion: probe.Version(ctx), Target: o.Target.String(), LoadAvg: LoadAvg(),
		RedisDelayUs: us(o.RedisDelay),
		Started:      time.Now().UTC().Format(time.RFC3339),
	}}
	if o.Target.Direct != "" && len(o.Target.Addrs) > 0 {
		direct, err1 := Ping(o.Target.Direct, 300)
		proxied, err2 := Ping(o.Target.Addrs[0], 300)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("bench: PING through the proxy: %w", err)
		}
		res.Env.PingDirectUs, res.Env.PingProxyUs = us(direct), us(proxied)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "PING round trip, median of 300: %.0f µs direct, %.0f µs through the proxy (%v added each way)\n",
				res.Env.PingDirectUs, res.Env.PingProxyUs, o.RedisDelay)
		}
	}
	start := time.Now()

	var ceiling []job
	for _, c := range o.CeilingConcurrency {
		sc := CeilingScenario{Conns: c, Warmup: o.Warmup, Duration: o.Duration, MaxOps: o.MaxOps}
		ceiling = append(ceiling, job{fmt.Sprintf("ceiling: raw EVALSHA auto-pipelined, %d in flight", c),
			func(ctx context.Context) (Row, error) { return RunCeiling(ctx, o.Target, sc, probe) }})
	}
	if o.CeilingBatch > 0 && len(o.CeilingConcurrency) > 0 {
		sc := CeilingScenario{Conns: o.CeilingConcurrency[0], Batch: o.CeilingBatch, Warmup: o.Warmup, Duration: o.Duration, MaxOps: o.MaxOps}
		ceiling = append(ceiling, job{fmt.Sprintf("ceiling: raw EVALSHA, DoMulti of %d, %d in flight", sc.Batch, sc.Conns),
			func(ctx context.Context) (Row, error) { return RunCeiling(ctx, o.Target, sc, probe) }})
	}
	jobs := append([]job(nil), ceiling...)
	for _, b := range o.Backends {
		for _, s := range o.Strategies {
			sc := HeartbeatScenario{Table: TableSeed, Backend: b, Strategy: s, Conns: o.SeedConns,
				Interval: o.SeedInterval, Duration: o.SeedDuration, MaxOps: o.MaxOps, Patch: o.Patch}
			jobs = append(jobs, job{fmt.Sprintf("heartbeat seed scenario %s %s: %d conns every %v", b, s, sc.Conns, sc.Interval),
				func(ctx context.Context) (Row, error) { return RunHeartbeat(ctx, o.Target, sc, probe) }})
		}
	}
	for _, b := range o.Backends {
		for _, s := range o.Strategies {
			for _, c := range o.Concurrency {
				sc := HeartbeatScenario{Table: TableHeartbeat, Backend: b, Strategy: s, Conns: c,
					Warmup: o.Warmup, Duration: o.Duration, MaxOps: o.MaxOps, Patch: o.Patch}
				jobs = append(jobs, job{fmt.Sprintf("heartbeat saturation %s %s, %d conns", b, s, c),
					func(ctx context.Context) (Row, error) { return RunHeartbeat(ctx, o.Target, sc, probe) }})
			}
		}
	}
	for _, b := range o.Backends {
		for _, s := range o.MetaStrategies {
			for _, retry := range o.MetaRetry {
				sc := MetadataScenario{Backend: b, Strategy: s, Writers: o.MetaWriters, Duration: o.MetaDuration, MaxOps: o.MaxOps, Retry: retry}
				jobs = append(jobs, job{fmt.Sprintf("metadata %s %s, %d writers, %s retry", b, s, sc.Writers, retry),
					func(ctx context.Context) (Row, error) { return RunMetadata(ctx, o.Target, sc, probe) }})
			}
		}
	}

	jobs = append(jobs, userIndexJobs(o, probe)...)

	// The ceiling again at the end: the best of both is the ceiling, so a
	// disturbance during one measurement does not flatter every ratio.
	if o.CeilingTwice {
		jobs = append(jobs, ceiling...)
	}
	if o.UserIndexOnly {
		jobs = userIndexJobs(o, probe)
	}
	for i, j := range jobs {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "[%2d/%d %5.1fs] %s …\n", i+1, len(jobs), time.Since(start).Seconds(), j.label)
		}
		row, err := j.run(ctx)
		if err != nil {
			return res, fmt.Errorf("%s: %w", j.label, err)
		}
		row.RedisDelayUs = us(o.RedisDelay)
		if o.Progress != nil {
			extra := ""
			if row.LostUpdates != nil {
				extra = fmt.Sprintf(", lost updates %d", *row.LostUpdates)
			}
			if row.Errors > 0 {
				extra += fmt.Sprintf(", %d errors (first: %s)", row.Errors, row.FirstError)
			}
			fmt.Fprintf(o.Progress, "        %.0f ops/s, p50 %.2f ms, p99 %.2f ms, %.2f round trips/op, CPU: Redis %.0f%%, bench %.0f%%, others %.0f%%%s\n",
				row.OpsPerSec, row.P50Ms, row.P99Ms, row.RoundTripsPerOp, row.RedisCPUPct, row.ClientCPUPct, row.OtherCPUPct, extra)
		}
		if row.Backend == BackendRaw {
			row.Pass = "start"
			if o.CeilingTwice && i >= len(jobs)-len(ceiling) {
				row.Pass = "end"
			}
		}
		res.Rows = append(res.Rows, row)
	}
	res.Env.ElapsedS = time.Since(start).Seconds()
	res.fillCeiling()
	return res, nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// Ceiling returns the best ceiling row's ops/s (0 without one).
func Ceiling(rows []Row) float64 {
	var best float64
	for _, row := range rows {
		if row.Backend == BackendRaw && row.OpsPerSec > best {
			best = row.OpsPerSec
		}
	}
	return best
}

// fillCeiling sets Ceiling to the best ceiling row and every heartbeat
// row's ratio to it.
func (r *Results) fillCeiling() {
	r.Ceiling = Ceiling(r.Rows)
	if r.Ceiling == 0 {
		return
	}
	for i := range r.Rows {
		if r.Rows[i].Table == TableHeartbeat {
			r.Rows[i].CeilingRatio = ptr(r.Rows[i].OpsPerSec / r.Ceiling)
		}
	}
}

// WriteMarkdown writes the three tables with their headings and the
// environment, in the form bench/RESULTS.md quotes.
func (r *Results) WriteMarkdown(w io.Writer) {
	o, e := r.Options, r.Env
	via := "loopback"
	if e.RedisDelayUs > 0 {
		via = fmt.Sprintf("loopback through a proxy adding %.0f µs each way; median PING %.0f µs direct, %.0f µs through it", e.RedisDelayUs, e.PingDirectUs, e.PingProxyUs)
	}
	fmt.Fprintf(w, "Taken %s on %d CPUs (GOMAXPROCS %d), %s, Redis %s at %s (%s); load average before the run: %s; run time %.0f s.\n\n",
		e.Started, e.NumCPU, e.GOMAXPROCS, e.Go, e.RedisVersion, e.Target, via, e.LoadAvg, e.ElapsedS)

	var sum, peak float64
	for _, row := range r.Rows {
		sum += row.OtherCPUPct
		peak = max(peak, row.OtherCPUPct)
	}
	if n := len(r.Rows); n > 0 {
		fmt.Fprintf(w, "Other processes on the machine used %.0f%% of one core on average during the measured windows (at most %.0f%%).\n\n", sum/float64(n), peak)
	}

	if o.UserIndexOnly {
		r.writeUserIndex(w)
		return
	}
	fmt.Fprintf(w, "### Heartbeat: the seed's scenario (%d connections, one heartbeat each every %v, %v)\n\n", o.SeedConns, o.SeedInterval, o.SeedDuration)
	WriteSeedTable(w, r.Rows)
	fmt.Fprintln(w)

	fmt.Fprintf(w, "### Heartbeat: closed-loop saturation (%v warmup, %v measured per row)\n\n", o.Warmup, o.Duration)
	fmt.Fprintf(w, "The ceiling is heartbeat.lua sent as raw `EVALSHA` by rueidis with no service logic; \"of ceiling\" is each row's throughput over the best ceiling row (%s ops/s).\n\n", num(r.Ceiling))
	WriteHeartbeatTable(w, r.Rows)
	fmt.Fprintln(w)

	fmt.Fprintf(w, "### Metadata: %d writers, get → update(counter+1, majorRevision CAS) on one channel, %v\n\n", o.MetaWriters, o.MetaDuration)
	WriteMetadataTable(w, r.Rows)
	fmt.Fprintln(w)
	r.writeUserIndex(w)
}

func (r *Results) writeUserIndex(w io.Writer) {
	o := r.Options
	if o.UserIndexPairs > 0 {
		fmt.Fprintf(w, "### User index cost: %d conns, closed loop, lua; the index off and on take turns of %v, %d each (off-on, on-off, …); \"per block\" is the ratio over each fifth of the turns\n\n",
			o.UserIndexConns, o.UserIndexSlice, o.UserIndexPairs)
		WriteUserIndexTable(w, r.Rows)
		fmt.Fprintln(w)
	}
}
