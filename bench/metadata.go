package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence/core"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/counting"
)

// counterKey is the metadata item the writers increment.
const counterKey = "counter"

// MetadataScenario is W writers incrementing one counter item of one
// channel: each updates the counter to the value it knows + 1 with
// MajorRevision set to the majorRevision it knows (compare-and-set), and
// retries on a conflict. What it knows is the record its last update
// returned, or the one a conflict carried (presence.ConflictError); it
// reads the channel (GetMetadata) only when it has neither: at the start,
// after another error, or after a conflict without a record (the watch
// strategy out of retries, the app-level CAS). lost updates = successful
// updates − the final counter: what a correct CAS never loses.
type MetadataScenario struct {
	Backend string
	// Strategy is a metadata spec ("lua", "watch", "watch?retries=5"), or
	// StrategyAppCAS for the seed's application-level check.
	Strategy string
	Writers  int
	Duration time.Duration
	MaxOps   int64 // bound on update attempts (0: none beyond Duration)
	// Retry is the writers' policy after a conflict: RetryBackoff (pause
	// presence.ConflictBackoff(n) after the n-th conflict in a row, then
	// retry against the returned record) or RetryImmediate (retry at once).
	// The same policy for every strategy, so rows compare strategies.
	Retry string
}

// Writer retry policies after a conflict (MetadataScenario.Retry).
const (
	RetryBackoff   = "backoff"
	RetryImmediate = "immediate"
)

// appCAS is the seed's "传统方式（应用层 CAS）": read the record, compare its
// majorRevision in Go, write — without WATCH, so a write landing between the
// read and the write is overwritten (TOCTOU). It exists only here, to show
// what the transactional strategies fix; it is not a registered strategy.
type appCAS struct {
	c      backend.Client
	keys   core.Keys
	events string // the channel's metadata event channel in the service's pub/sub mode
}

func (a appCAS) update(ctx context.Context, ch presence.Channel, key, value string, major int64) error {
	metaKey := a.keys.Meta(ch.Type, ch.Name)
	r, err := a.c.Do(ctx, backend.K("HGETALL", metaKey))
	if err != nil {
		return err
	}
	cur, err := core.ParseMetaReply(r[0])
	if err != nil {
		return err
	}
	if cur.MajorRevision != major {
		return fmt.Errorf("%w: majorRevision is %d, not %d", presence.ErrConflict, cur.MajorRevision, major)
	}
	e, ok := cur.Items[key]
	if !ok {
		return fmt.Errorf("%w: no item %q", presence.ErrInvalidArgument, key)
	}
	// The window: another writer may write here, and is overwritten.
	ev, _ := json.Marshal(core.MetadataEvent{
		ChannelName: ch.Name, ChannelType: ch.Type, Operation: "update",
		Items:         []core.MetadataEventItem{{Key: key, Value: value, Revision: e.Revision + 1}},
		MajorRevision: major + 1, Timestamp: time.Now().UnixMilli(),
	})
	w, err := a.c.Do(ctx,
		backend.K("HSET", metaKey, core.MetaFieldMajor, backend.Itoa(major+1),
			core.MetaPrefixValue+key, value, core.MetaPrefixRev+key, backend.Itoa(e.Revision+1)),
		backend.C("PUBLISH", nil, a.events, string(ev)))
	if err != nil {
		return err
	}
	return backend.FirstError(w)
}

// metaRig is a Service of its own (round trips counted) and a channel
// whose counter item starts at 0.
type metaRig struct {
	raw    backend.Client
	cc     *counting.Client
	svc    *presence.Service
	ch     presence.Channel
	update func(ctx context.Context, value string, major int64) (*presence.MetadataResponse, error)
}

func newMetaRig(ctx context.Context, t Target, backendName, spec string) (*metaRig, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	raw, err := t.Connect(cctx, backendName)
	cancel()
	if err != nil {
		return nil, err
	}
	cc := counting.New(raw)
	svcSpec := spec
	if spec == StrategyAppCAS {
		svcSpec = "lua" // serves GetMetadata and the setup only
	}
	prefix := uniquePrefix("meta")
	svc, err := presence.New(cc, presence.Config{Metadata: svcSpec, KeyPrefix: prefix, ReaperInterval: -1, Logger: quietLogger()})
	if err != nil {
		raw.Close()
		return nil, err
	}
	r := &metaRig{raw: raw, cc: cc, svc: svc, ch: presence.Channel{Type: "bench", Name: prefix}}
	if _, err := svc.SetMetadata(ctx, r.ch, []presence.Item{{Key: counterKey, Value: "0"}}, presence.MetadataOptions{}); err != nil {
		r.close()
		return nil, err
	}
	r.update = func(ctx context.Context, value string, major int64) (*presence.MetadataResponse, error) {
		return svc.UpdateMetadata(ctx, r.ch, []presence.Item{{Key: counterKey, Value: value}}, presence.MetadataOptions{MajorRevision: &major})
	}
	if spec == StrategyAppCAS {
		a := appCAS{c: cc, keys: svc.Keys(), events: svc.MetadataEventsChannel(r.ch)}
		r.update = func(ctx context.Context, value string, major int64) (*presence.MetadataResponse, error) {
			return nil, a.update(ctx, r.ch, counterKey, value, major)
		}
	}
	cc.Reset()
	return r, nil
}

// attempt writes counter+1 against the majorRevision of rec, the record
// the writer knows (nil: it reads the channel first). It returns the
// record to try next (nil: none known) and nil on success, an error
// wrapping ErrConflict when another writer got there first, another
// error on failure.
func (r *metaRig) attempt(ctx context.Context, rec *presence.MetadataResponse) (*presence.MetadataResponse, error) {
	if rec == nil {
		var err error
		if rec, err = r.svc.GetMetadata(ctx, r.ch); err != nil {
			return nil, err
		}
	}
	n, err := strconv.ParseInt(rec.Metadata[counterKey].Value, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("bench: counter %q: %w", rec.Metadata[counterKey].Value, err)
	}
	next, err := r.update(ctx, strconv.FormatInt(n+1, 10), rec.MajorRevision)
	var ce *presence.ConflictError
	if errors.As(err, &ce) {
		next = ce.Current
	}
	return next, err
}

// pause sleeps d, or until deadline or ctx ends if sooner.
func pause(ctx context.Context, d time.Duration, deadline time.Time) {
	d = min(d, time.Until(deadline))
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// counter reads the counter.
func (r *metaRig) counter(ctx context.Context) (int64, error) {
	rec, err := r.svc.GetMetadata(ctx, r.ch)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(rec.Metadata[counterKey].Value, 10, 64)
}

func (r *metaRig) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.raw.Do(ctx, backend.K("DEL", r.svc.Keys().Meta(r.ch.Type, r.ch.Name)))
	r.svc.Close()
	r.raw.Close()
}

type metaWriter struct {
	hist                       Hist
	attempts, successes, confl int64
	errs                       int64
	firstError                 error
	_                          [64]byte
}

// RunMetadata runs sc on a channel of its own and reads the final counter.
func RunMetadata(ctx context.Context, t Target, sc MetadataScenario, probe *Probe) (Row, error) {
	row := Row{Table: TableMetadata, Backend: sc.Backend, Strategy: strategyName(sc.Strategy), Concurrency: sc.Writers, Retry: sc.Retry}
	switch sc.Retry {
	case RetryBackoff, RetryImmediate:
	default:
		return row, fmt.Errorf("bench: writer retry policy %q (want %s or %s)", sc.Retry, RetryBackoff, RetryImmediate)
	}
	runCtx, cancel := context.WithTimeout(ctx, sc.Duration+time.Minute)
	defer cancel()
	r, err := newMetaRig(runCtx, t, sc.Backend, sc.Strategy)
	if err != nil {
		return row, err
	}
	defer r.close()

	maxOps := sc.MaxOps
	if maxOps <= 0 {
		maxOps = 100_000_000
	}
	// One attempt per writer first, unmeasured, so that connection pools
	// are filled (watch dials a dedicated connection per writer).
	var warm sync.WaitGroup
	for range sc.Writers {
		warm.Add(1)
		go func() { defer warm.Done(); r.attempt(runCtx, nil) }()
	}
	warm.Wait()
	baseline, err := r.counter(runCtx)
	if err != nil {
		return row, err
	}
	r.cc.Reset()

	var attemptsLeft atomic.Int64
	attemptsLeft.Store(maxOps)
	st0 := r.svc.Stats()
	deadline := time.Now().Add(sc.Duration)
	m := startMeter(runCtx, probe)
	writers := make([]metaWriter, sc.Writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func(w *metaWriter) {
			defer wg.Done()
			var rec *presence.MetadataResponse
			var conflicts int // in a row
			for time.Now().Before(deadline) {
				start := time.Now()
				for time.Now().Before(deadline) { // one increment: until it succeeds
					if attemptsLeft.Add(-1) < 0 {
						return
					}
					w.attempts++
					var err error
					rec, err = r.attempt(runCtx, rec)
					if err == nil {
						conflicts = 0
						w.successes++
						w.hist.Record(time.Since(start))
						break
					}
					if errors.Is(err, presence.ErrConflict) {
						w.confl++
						conflicts++
						if sc.Retry == RetryBackoff {
							pause(runCtx, presence.ConflictBackoff(conflicts), deadline)
						}
						continue
					}
					w.errs++
					if w.firstError == nil {
						w.firstError = err
					}
					break
				}
			}
		}(&writers[i])
	}
	wg.Wait()
	wall, cpu := m.stop(runCtx)
	st1 := r.svc.Stats()
	rts := r.cc.RoundTrips()

	counter, err := r.counter(runCtx)
	if err != nil {
		return row, err
	}
	var all metaWriter
	var firstError error
	for i := range writers {
		w := &writers[i]
		all.attempts += w.attempts
		all.successes += w.successes
		all.confl += w.confl
		all.errs += w.errs
		all.hist.Merge(&w.hist)
		if firstError == nil {
			firstError = w.firstError
		}
	}
	row.Ops, row.Errors, row.DurationS = all.successes, all.errs, wall.Seconds()
	row.OpsPerSec = rate(all.successes, wall)
	row.P50Ms, row.P99Ms = all.hist.QuantileMs(0.50), all.hist.QuantileMs(0.99)
	row.RedisCPUPct, row.ClientCPUPct, row.OtherCPUPct = cpu.redis, cpu.self, cpu.other
	row.RoundTripsPerOp = ratio(rts, all.successes)
	if all.successes > 0 {
		// Redis's own CPU time per commit: what the losing attempts cost
		// the server, and steadier than updates/s on a shared machine.
		row.RedisCPUUsPerOp = ptr(cpu.redis / 100 * wall.Seconds() * 1e6 / float64(all.successes))
	}
	row.SuccessRate = ptr(ratio(all.successes, all.attempts))
	row.AvgRetries = ptr(ratio(all.confl, all.successes))
	row.LostUpdates = ptr(all.successes - (counter - baseline))
	row.Attempts = ptr(all.attempts)
	if strategyName(sc.Strategy) == "watch" {
		row.TxRetriesPerOp = ptr(ratio(int64(st1.MetadataRetries-st0.MetadataRetries), all.attempts))
	}
	row.setFirstError(firstError)
	return row, nil
}
