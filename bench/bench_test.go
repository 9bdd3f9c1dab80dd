package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

var backends = []string{"rueidis", "goredis"}

// target is the test binary's shared redis-server (skips without one,
// unless REQUIRE_REDIS=1).
func target(tb testing.TB) Target {
	tb.Helper()
	return Target{Addrs: redistest.Standalone(tb).Addrs}
}

// setParallelism makes RunParallel use about n goroutines.
func setParallelism(b *testing.B, n int) {
	b.SetParallelism(max(1, (n+runtime.GOMAXPROCS(0)-1)/runtime.GOMAXPROCS(0)))
}

// warm runs op once for each of n connections concurrently, so that pools
// are filled (every dedicated connection dialled) before the timer starts.
func warm(b *testing.B, n int, op func(i int) error) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := op(i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// BenchmarkHeartbeat heartbeats 256 joined connections from 256 goroutines
// through the Service, per backend × strategy, and reports throughput and
// round trips per heartbeat.
//
//	go test -bench Heartbeat -benchtime 3s ./bench
func BenchmarkHeartbeat(b *testing.B) {
	t := target(b)
	const conns = 256
	for _, be := range backends {
		for _, spec := range []string{"lua", "pipeline", "batch"} {
			b.Run(be+"/"+spec, func(b *testing.B) {
				ctx := context.Background()
				r, err := newHBRig(ctx, t, be, spec, conns)
				if err != nil {
					b.Fatal(err)
				}
				defer r.close()
				warm(b, conns, func(i int) error { return r.heartbeat(ctx, i, 0) })
				r.cc.Reset()
				var next atomic.Int64
				setParallelism(b, conns)
				b.ResetTimer()
				start, cpu := time.Now(), SelfCPU()
				b.RunParallel(func(pb *testing.PB) {
					i := int(next.Add(1) - 1)
					for pb.Next() {
						if err := r.heartbeat(ctx, i, 0); err != nil {
							b.Error(err)
							return
						}
					}
				})
				el := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/el.Seconds(), "ops/s")
				// This process's CPU per heartbeat (redis-server's is not
				// in it): on a shared machine ns/op follows the load, this
				// follows what our code and the client library cost.
				b.ReportMetric((SelfCPU()-cpu)*1e9/float64(b.N), "cpu-ns/op")
				b.ReportMetric(float64(r.cc.RoundTrips())/float64(b.N), "round-trips/op")
			})
		}
	}
}

// BenchmarkCeiling is heartbeat.lua as raw EVALSHA from 256 goroutines,
// auto-pipelined by rueidis with no service logic: the yardstick of
// BenchmarkHeartbeat.
func BenchmarkCeiling(b *testing.B) {
	t := target(b)
	const conns = 256
	ctx := context.Background()
	r, err := newCeilRig(ctx, t, conns)
	if err != nil {
		b.Fatal(err)
	}
	defer r.close()
	warm(b, conns, func(i int) error { return r.heartbeat(ctx, i) })
	var next atomic.Int64
	setParallelism(b, conns)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1) - 1)
		for pb.Next() {
			if err := r.heartbeat(ctx, i); err != nil {
				b.Error(err)
				return
			}
		}
	})
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "ops/s")
	b.ReportMetric(1, "round-trips/op")
}

// BenchmarkMetadata runs 20 writers doing update(majorRevision CAS) on one
// channel per backend × strategy (and the seed's app-level CAS), each
// against the record its last update or conflict returned (a get when it
// has none), pausing presence.ConflictBackoff after a conflict as
// presence-bench's writers do; one op is one attempt. It reports attempts/s (ops/s), successful
// updates/s, round trips per attempt, and the updates lost.
func BenchmarkMetadata(b *testing.B) {
	t := target(b)
	const writers = 20
	for _, be := range backends {
		for _, spec := range []string{"lua", "watch", StrategyAppCAS} {
			b.Run(be+"/"+spec, func(b *testing.B) {
				ctx := context.Background()
				r, err := newMetaRig(ctx, t, be, spec)
				if err != nil {
					b.Fatal(err)
				}
				defer r.close()
				warm(b, writers, func(int) error {
					if _, err := r.attempt(ctx, nil); err != nil && !errors.Is(err, presence.ErrConflict) {
						return err
					}
					return nil
				})
				baseline, err := r.counter(ctx)
				if err != nil {
					b.Fatal(err)
				}
				r.cc.Reset()
				var ok atomic.Int64
				setParallelism(b, writers)
				b.ResetTimer()
				start := time.Now()
				// As presence-bench's writers (RetryBackoff): retry against
				// the record the update or the conflict returned, after a
				// presence.ConflictBackoff pause once a conflict comes.
				far := time.Now().Add(time.Hour)
				b.RunParallel(func(pb *testing.PB) {
					var rec *presence.MetadataResponse
					var conflicts int // in a row
					for pb.Next() {
						var err error
						rec, err = r.attempt(ctx, rec)
						switch {
						case err == nil:
							ok.Add(1)
							conflicts = 0
						case errors.Is(err, presence.ErrConflict):
							conflicts++
							pause(ctx, presence.ConflictBackoff(conflicts), far)
						default:
							b.Error(err)
							return
						}
					}
				})
				el := time.Since(start)
				b.StopTimer()
				final, err := r.counter(ctx)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/el.Seconds(), "ops/s")
				b.ReportMetric(float64(ok.Load())/el.Seconds(), "updates/s")
				b.ReportMetric(float64(ok.Load())/float64(b.N), "success-rate")
				b.ReportMetric(float64(r.cc.RoundTrips())/float64(b.N), "round-trips/op")
				b.ReportMetric(float64(ok.Load()-(final-baseline)), "lost-updates")
			})
		}
	}
}

// tinyOptions runs every scenario for a few hundred milliseconds at small
// concurrency: enough to exercise the code, nothing to measure with.
func tinyOptions(t Target) Options {
	o := DefaultOptions()
	o.Target = t
	o.SeedConns, o.SeedInterval, o.SeedDuration = 10, 20*time.Millisecond, 150*time.Millisecond
	o.Concurrency = []int{4, 16}
	o.Warmup, o.Duration = 20*time.Millisecond, 120*time.Millisecond
	o.CeilingConcurrency, o.CeilingBatch = []int{16}, 8
	o.MetaWriters, o.MetaDuration = 4, 200*time.Millisecond
	o.UserIndexPairs, o.UserIndexSlice, o.UserIndexConns = 2, 60*time.Millisecond, 8
	o.MaxOps = 20_000
	return o
}

// TestScenarios runs every scenario of the suite for a tiny bounded budget
// and checks what must hold whatever the speed: no failed operation, the
// round trips each strategy is built to cost, no lost update for the
// transactional strategies, every row and output well formed. It never
// checks a speed.
func TestScenarios(t *testing.T) {
	tg := target(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := tinyOptions(tg)
	var progress bytes.Buffer
	o.Progress = &progress
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	want := 2*(len(o.CeilingConcurrency)+1) + // ceiling rows, at the start and the end
		len(o.Backends)*len(o.Strategies)*(1+len(o.Concurrency)) + // seed + saturation
		len(o.Backends)*len(o.MetaStrategies) +
		len(o.Backends)*2 // user index: heartbeat, join+leave
	if len(res.Rows) != want {
		t.Fatalf("%d rows, want %d", len(res.Rows), want)
	}
	if res.Ceiling <= 0 {
		t.Fatalf("ceiling %v", res.Ceiling)
	}
	appCAS := 0
	for _, r := range res.Rows {
		name := r.Table + " " + r.Backend + " " + r.Strategy
		if r.Errors != 0 {
			t.Errorf("%s: %d errors, first: %s", name, r.Errors, r.FirstError)
		}
		if r.Ops <= 0 || r.OpsPerSec <= 0 || r.P50Ms <= 0 || r.P99Ms < r.P50Ms {
			t.Errorf("%s: ops %d, %v ops/s, p50 %v, p99 %v", name, r.Ops, r.OpsPerSec, r.P50Ms, r.P99Ms)
		}
		switch r.Table {
		case TableSeed, TableHeartbeat:
			if r.Table == TableHeartbeat && r.CeilingRatio == nil {
				t.Errorf("%s: no ratio to the ceiling", name)
			}
			switch r.Strategy {
			case "lua":
				if r.RoundTripsPerOp != 1 {
					t.Errorf("%s: %v round trips per heartbeat, want exactly 1", name, r.RoundTripsPerOp)
				}
			case "pipeline": // WATCH, HGETALL, MULTI/EXEC; more only on an abort
				if r.RoundTripsPerOp < 3 {
					t.Errorf("%s: %v round trips per heartbeat, want at least 3", name, r.RoundTripsPerOp)
				}
			case "batch":
				if r.RoundTripsPerBatch == nil || *r.RoundTripsPerBatch > 2 {
					t.Errorf("%s: round trips per batch %v, want at most 2", name, r.RoundTripsPerBatch)
				}
			}
		case TableUserIndex:
			if r.OnOffRatio == nil || r.OffOpsPerSec == nil || *r.OffOpsPerSec <= 0 || r.OffRoundTripsPerOp == nil {
				t.Fatalf("%s: user index fields missing: %+v", name, r)
			}
			// Heartbeats never touch the index: one round trip either way.
			if r.Op == OpHeartbeat && (r.RoundTripsPerOp != 1 || *r.OffRoundTripsPerOp != 1) {
				t.Errorf("%s: heartbeat round trips %v (on) and %v (off), want exactly 1", name, r.RoundTripsPerOp, *r.OffRoundTripsPerOp)
			}
		case TableMetadata:
			if r.SuccessRate == nil || r.AvgRetries == nil || r.LostUpdates == nil || r.Attempts == nil {
				t.Fatalf("%s: metadata fields missing: %+v", name, r)
			}
			if *r.SuccessRate <= 0 || *r.SuccessRate > 1 {
				t.Errorf("%s: success rate %v", name, *r.SuccessRate)
			}
			switch r.Strategy {
			case "lua", "watch":
				if *r.LostUpdates != 0 {
					t.Errorf("%s: %d lost updates, want 0", name, *r.LostUpdates)
				}
			case StrategyAppCAS:
				appCAS++
				if *r.LostUpdates < 0 {
					t.Errorf("%s: %d lost updates: the counter went past the successes", name, *r.LostUpdates)
				}
			}
		}
	}
	if appCAS != len(o.Backends) {
		t.Errorf("%d app-level CAS rows, want %d", appCAS, len(o.Backends))
	}

	var md bytes.Buffer
	res.WriteMarkdown(&md)
	for _, s := range []string{"### Heartbeat: the seed's scenario", "### Heartbeat: closed-loop saturation", "### Metadata", "**ceiling**", "| app-cas |", "### User index cost", "| join+leave |"} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("markdown lacks %q:\n%s", s, md.String())
		}
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, res.Rows); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(&js)
	for n := 0; ; n++ {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			if n != len(res.Rows) {
				t.Errorf("%d JSON rows, want %d", n, len(res.Rows))
			}
			break
		} else if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"table", "backend", "strategy", "concurrency", "ops_per_sec", "p50_ms", "p99_ms", "round_trips_per_op", "redis_cpu_pct"} {
			if _, ok := m[k]; !ok {
				t.Errorf("JSON row %v lacks %q", m, k)
			}
		}
		if m["table"] == TableMetadata {
			for _, k := range []string{"success_rate", "avg_retries", "lost_updates"} {
				if _, ok := m[k]; !ok {
					t.Errorf("JSON row %v lacks %q", m, k)
				}
			}
		}
	}
	var svg bytes.Buffer
	if err := WriteSVG(&svg, res.Rows, res.Ceiling, "test <chart> & co"); err != nil {
		t.Fatal(err)
	}
	checkXML(t, svg.Bytes())
	if !strings.Contains(progress.String(), "ceiling") {
		t.Errorf("no progress lines: %q", progress.String())
	}
}

func checkXML(t *testing.T, b []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	rects := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	if rects < 4 {
		t.Errorf("SVG has %d rects", rects)
	}
}

func TestHist(t *testing.T) {
	var h Hist
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	for _, c := range []struct{ q, want float64 }{{0.5, 500}, {0.99, 990}, {1, 1000}} {
		if got := h.QuantileMs(c.q); got < c.want*0.96 || got > c.want*1.04 {
			t.Errorf("q%v = %v ms, want about %v", c.q, got, c.want)
		}
	}
	var small Hist
	small.Record(30 * time.Microsecond)
	if got := small.QuantileMs(0.99); got < 0.029 || got > 0.031 {
		t.Errorf("30µs sample: p99 %v ms", got)
	}
	for i := 0; i < histBuckets; i++ { // indexes and values agree
		if j := histIndex(int64(histValue(i))); j != i {
			t.Fatalf("bucket %d: value %v maps to bucket %d", i, histValue(i), j)
		}
	}
}

func TestTargetFromEnv(t *testing.T) {
	if got := TargetFromEnv(" 127.0.0.1:1, 127.0.0.1:2 "); len(got.Addrs) != 2 || got.URL != "" {
		t.Errorf("addresses: %+v", got)
	}
	if got := TargetFromEnv("redis://u:secret@127.0.0.1:6380/0"); got.URL == "" || strings.Contains(got.String(), "secret") {
		t.Errorf("URL: %+v, %s", got, got.String())
	}
}

// TestReaperScenario runs both reaper modes on a tiny load and checks what
// must hold whatever the speed: every dead conn leaves on the observer,
// every idle conn is reaped once expired, the table names both modes.
func TestReaperScenario(t *testing.T) {
	tg := target(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sc := DefaultReaperScenario()
	sc.DeadConns, sc.DeadRooms, sc.TTL, sc.Interval = 20, 4, time.Second, 200*time.Millisecond
	sc.IdleConns, sc.IdleRooms, sc.JoinTimeout, sc.Window = 200, 20, 5*time.Second, 500*time.Millisecond
	rows, err := RunReaper(ctx, tg, sc)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Mode != "sweep" || rows[1].Mode != "notify" {
		t.Fatalf("rows %+v", rows)
	}
	for _, r := range rows {
		if r.DeadLeft != sc.DeadConns || r.IdleConns != sc.IdleConns || r.Expired != sc.IdleConns || r.IdleCPUs < 0 {
			t.Errorf("%s: %+v", r.Mode, r)
		}
	}
	var out bytes.Buffer
	WriteReaperTable(&out, sc, rows)
	if !strings.Contains(out.String(), "| notify | 20/20 |") {
		t.Errorf("table:\n%s", out.String())
	}
}
