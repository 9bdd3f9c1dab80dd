package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// loadSpec bounds one load loop in time and in count.
type loadSpec struct {
	workers  int
	interval time.Duration // > 0: each worker starts one op every interval (open loop); 0: closed loop
	warmup   time.Duration // ops before the measured window are neither counted nor timed
	duration time.Duration // the measured window
	maxOps   int64         // ops started in all, warmup included (0: 100 million)
}

// opFunc runs one operation of worker w and returns how many operations it
// stood for (a DoMulti batch stands for many), 0 when it failed.
type opFunc func(ctx context.Context, w int) (int, error)

// loadResult is what a load loop measured.
type loadResult struct {
	ops, errs  int64 // in the window
	totalOps   int64 // whole run after the warm round, warmup included
	window     time.Duration
	hist       Hist
	cpu        cpuPcts
	firstError error
}

type loadWorker struct {
	hist       Hist
	ops, errs  int64 // in the window
	total      int64
	firstError error
	_          [64]byte // keep workers' counters off each other's cache lines
}

// meter measures Redis's and this process's CPU over a window.
type meter struct {
	probe               *Probe
	t0                  time.Time
	redis0, self0, sys0 float64
	redisErr, sysErr    error
}

func startMeter(ctx context.Context, p *Probe) *meter {
	m := &meter{probe: p, self0: selfCPU()}
	m.sys0, m.sysErr = SystemBusy()
	if p != nil {
		m.redis0, m.redisErr = p.CPU(ctx)
	}
	m.t0 = time.Now()
	return m
}

// cpuPcts are the CPU figures of a window, one core = 100.
type cpuPcts struct {
	redis, self float64
	// other is what the rest of the machine used: all CPU time minus
	// Redis's and ours (meaningful when Redis runs on this machine).
	other float64
}

// stop returns the window and its CPU figures.
func (m *meter) stop(ctx context.Context) (time.Duration, cpuPcts) {
	wall := time.Since(m.t0)
	self := selfCPU()
	sys1, sysErr := SystemBusy()
	var c cpuPcts
	var redis float64
	if m.probe != nil && m.redisErr == nil {
		if r1, err := m.probe.CPU(ctx); err == nil {
			redis = r1 - m.redis0
			c.redis = 100 * redis / wall.Seconds()
		}
	}
	c.self = 100 * (self - m.self0) / wall.Seconds()
	if m.sysErr == nil && sysErr == nil {
		c.other = max(0, 100*((sys1-m.sys0)-(self-m.self0)-redis)/wall.Seconds())
	}
	return wall, c
}

// runLoad drives op from spec.workers goroutines: one op per worker (then
// afterWarm, while every worker waits, so counters can be reset exactly)
// and a warmup, then a measured window in which every op that completes is counted and its latency
// recorded, then it stops the workers and waits for them. It never runs
// past warmup + duration plus one op per worker, nor starts more than
// maxOps ops.
func runLoad(ctx context.Context, spec loadSpec, probe *Probe, afterWarm func(), op opFunc) loadResult {
	if spec.maxOps <= 0 {
		spec.maxOps = 100_000_000
	}
	var (
		budget    atomic.Int64
		measuring atomic.Bool
		stop      = make(chan struct{})
		stopped   atomic.Bool
		wg        sync.WaitGroup
		workers   = make([]loadWorker, spec.workers)
		done      = make(chan struct{})
	)
	budget.Store(spec.maxOps)
	var warmed sync.WaitGroup
	warmed.Add(spec.workers)
	begin := make(chan struct{})
	for i := range workers {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			w := &workers[i]
			// One op before anything is measured, so that every connection
			// pool is filled (a dedicated WATCH connection dialled per
			// worker) and the window sees the steady state, not the dials.
			if budget.Add(-1) >= 0 {
				op(ctx, i)
			}
			warmed.Done()
			select { // every worker starts together, after afterWarm
			case <-begin:
			case <-stop:
				return
			}
			var timer *time.Timer
			next := time.Now()
			if spec.interval > 0 {
				// spread the first beats over one interval, as real clients are
				next = next.Add(time.Duration(mrand.Int64N(int64(spec.interval))))
				timer = time.NewTimer(time.Until(next))
				defer timer.Stop()
			}
			for !stopped.Load() {
				if timer != nil {
					select {
					case <-timer.C:
					case <-stop:
						return
					}
					next = next.Add(spec.interval)
					timer.Reset(time.Until(next))
				}
				if budget.Add(-1) < 0 {
					return
				}
				t0 := time.Now()
				n, err := op(ctx, i)
				d := time.Since(t0)
				w.total += int64(n)
				if !measuring.Load() {
					continue
				}
				if err != nil {
					w.errs++
					if w.firstError == nil {
						w.firstError = err
					}
					continue
				}
				w.ops += int64(n)
				for range n {
					w.hist.Record(d)
				}
			}
		}(i)
	}
	go func() { wg.Wait(); close(done) }()

	sleep := func(d time.Duration) bool { // false when every worker has ended
		select {
		case <-time.After(d):
			return true
		case <-done:
			return false
		case <-ctx.Done():
			return false
		}
	}
	var res loadResult
	allWarm := make(chan struct{})
	go func() { warmed.Wait(); close(allWarm) }()
	select {
	case <-allWarm:
	case <-done:
	case <-ctx.Done():
	}
	if afterWarm != nil {
		afterWarm()
	}
	close(begin)
	if spec.warmup > 0 {
		sleep(spec.warmup)
	}
	m := startMeter(ctx, probe)
	measuring.Store(true)
	sleep(spec.duration)
	measuring.Store(false)
	res.window, res.cpu = m.stop(ctx)
	stopped.Store(true)
	close(stop)
	<-done
	for i := range workers {
		w := &workers[i]
		res.ops += w.ops
		res.errs += w.errs
		res.totalOps += w.total
		res.hist.Merge(&w.hist)
		if res.firstError == nil {
			res.firstError = w.firstError
		}
	}
	return res
}

// uniquePrefix is a key prefix no other run shares, so runs never see each
// other's keys and nothing needs FLUSHALL on a Redis we do not own.
func uniquePrefix(kind string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return "bench-" + kind + "-" + hex.EncodeToString(b)
}

// quietLogger keeps the services' warnings and drops their info lines (the
// watch strategy logs every retried transaction at info).
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
