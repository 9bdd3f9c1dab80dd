package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence/bench"
)

const (
	floodUser = "lt-flood"
	floodRoom = "lt-flood-room"
)

// flood is the FLOOD_RATE socket's run and its counts; see the package
// documentation.
type flood struct {
	from, to atomic.Int64 // the window in Unix ns; 0 until it starts
	main     stats        // the main clients' heartbeats sent in the window
	done     chan struct{}

	mu          sync.Mutex
	sent        int64
	ok          int64
	byCode      map[string]int64
	timeouts    int64
	noAck       int64
	hist        bench.Hist
	discAt      []float64 // ms into the window
	discCause   string    // of the first disconnect
	reconnects  int
	connectErrs []string
	sentFor     time.Duration // from the window's start to the last send
}

func isTimeout(err error) bool { return strings.Contains(err.Error(), "timed out") }

// during tells whether a heartbeat sent at t belongs to the window.
func (f *flood) during(t time.Time) bool {
	from := f.from.Load()
	if from == 0 {
		return false
	}
	n := t.UnixNano()
	return n >= from && n < f.to.Load()
}

func (f *flood) start(ctx context.Context, cfg Config, testEnd time.Time, logw io.Writer) {
	f.done = make(chan struct{})
	go func() {
		defer close(f.done)
		f.run(ctx, cfg, testEnd, logw)
	}()
}

// wait returns when the flood is over (at once if it never started).
func (f *flood) wait() {
	if f.done != nil {
		<-f.done
	}
}

// run floods until the budget is spent, the window (clipped to the test)
// ends or ctx is done, then waits at most the ack timeout for the acks
// still due.
func (f *flood) run(ctx context.Context, cfg Config, testEnd time.Time, logw io.Writer) {
	begin := time.Now()
	end := begin.Add(cfg.FloodDuration)
	if end.After(testEnd) {
		end = testEnd
	}
	f.to.Store(end.UnixNano())
	f.from.Store(begin.UnixNano())
	budget := int64(math.Ceil(cfg.FloodRate * cfg.FloodDuration.Seconds()))
	fmt.Fprintf(logw, "loadtest: flood: %s heartbeats/s for %v from one socket (at most %d)\n",
		fmtN(cfg.FloodRate), end.Sub(begin).Round(time.Millisecond), budget)

	var (
		t        *rawTransport
		epoch    atomic.Int64
		lastDial time.Time
		sent     int64
		// Pacing restarts at each (re)connection: the time spent
		// disconnected is not made up in a burst.
		paceFrom time.Time
		paceBase int64
	)
	// The ticker sets the pacing's granularity: at 20,000/s a timer per
	// heartbeat would cost more than the sending.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	sleepUntil := func(at time.Time) bool {
		tm := time.NewTimer(time.Until(at))
		defer tm.Stop()
		select {
		case <-tm.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for sent < budget && time.Now().Before(end) && ctx.Err() == nil {
		if t == nil {
			if !lastDial.IsZero() {
				next := lastDial.Add(time.Second)
				if next.After(end) {
					next = end
				}
				if !sleepUntil(next) || !time.Now().Before(end) {
					break
				}
			}
			lastDial = time.Now()
			nt, err := f.connect(ctx, cfg, end, &epoch)
			if err != nil {
				f.mu.Lock()
				f.connectErrs = append(f.connectErrs, err.Error())
				f.mu.Unlock()
				continue
			}
			if paceFrom.IsZero() {
				// The window is the flood's: it starts once joined.
				begin = time.Now()
				f.from.Store(begin.UnixNano())
			} else {
				f.mu.Lock()
				f.reconnects++
				f.mu.Unlock()
			}
			t, paceFrom, paceBase = nt, time.Now(), sent
		}
		select {
		case <-t.dead():
			f.disconnected(begin, t)
			t = nil
			continue
		case <-tick.C:
		case <-ctx.Done():
		}
		due := min(budget, paceBase+int64(cfg.FloodRate*time.Since(paceFrom).Seconds()))
		for ; sent < due && time.Now().Before(end); sent++ {
			f.heartbeat(cfg, t, &epoch, sent)
		}
	}
	f.mu.Lock()
	f.sent, f.sentFor = sent, time.Since(begin)
	f.mu.Unlock()
	if t == nil {
		return
	}
	for wait := time.Now().Add(cfg.AckTimeout + 500*time.Millisecond); time.Now().Before(wait) && t.pendingAcks() > 0; {
		select {
		case <-t.dead():
			f.disconnected(begin, t)
			return
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			wait = time.Now()
		}
	}
	select {
	case <-t.dead():
		f.disconnected(begin, t)
	default:
		t.close() // ours: not a disconnect
	}
}

// connect dials the flood socket and joins its room; the window's end
// bounds its writes, so a server that stops reading cannot hold it.
func (f *flood) connect(ctx context.Context, cfg Config, end time.Time, epoch *atomic.Int64) (*rawTransport, error) {
	tr, err := dialRaw(ctx, cfg.TargetURL, floodUser, cfg.AckTimeout, func(presenceEvent) {})
	if err != nil {
		return nil, err
	}
	t := tr.(*rawTransport)
	t.setWriteDeadline(end)
	ch := make(chan error, 1)
	t.emit("presence:join", map[string]any{"roomId": floodRoom, "userId": floodUser, "state": map[string]any{"seq": 0}}, cfg.AckTimeout,
		func(a ack, err error) {
			switch {
			case err != nil:
			case !a.OK:
				err = fmt.Errorf("join refused: %s (code %s)", a.Error, failCode(a))
			case a.Self != nil:
				epoch.Store(int64(a.Self.Epoch))
			}
			ch <- err
		})
	select {
	case err = <-ch:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

func (f *flood) heartbeat(cfg Config, t *rawTransport, epoch *atomic.Int64, n int64) {
	payload := map[string]any{"epoch": epoch.Load()}
	if cfg.Patch {
		payload["patchState"] = map[string]any{"seq": n + 1}
	}
	sent := time.Now()
	t.emit("presence:heartbeat", payload, cfg.AckTimeout, func(a ack, err error) {
		d := time.Since(sent)
		f.mu.Lock()
		defer f.mu.Unlock()
		switch {
		case err != nil && isTimeout(err), err == nil && d > cfg.AckTimeout:
			f.timeouts++
		case err != nil:
			f.noAck++
		case !a.OK:
			if f.byCode == nil {
				f.byCode = map[string]int64{}
			}
			f.byCode[failCode(a)]++
		default:
			f.ok++
			f.hist.Record(d)
			if a.Epoch != nil {
				epoch.Store(int64(*a.Epoch))
			}
		}
	})
}

func (f *flood) disconnected(begin time.Time, t *rawTransport) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.discAt = append(f.discAt, float64(time.Since(begin).Microseconds())/1000)
	if f.discCause == "" {
		t.mu.Lock()
		if t.cause != nil {
			f.discCause = t.cause.Error()
		}
		t.mu.Unlock()
	}
}

// FloodSummary is the flood socket's report, and the main clients'
// latency with and without it.
type FloodSummary struct {
	RatePerSec      float64          `json:"rate_per_sec"`
	Budget          int64            `json:"budget"`
	Sent            int64            `json:"sent"`
	SentPerSec      float64          `json:"sent_per_sec"`
	AckedOK         int64            `json:"acked_ok"`
	AcksByCode      map[string]int64 `json:"acks_by_code"` // failure acks
	Timeouts        int64            `json:"timeouts"`
	NoAck           int64            `json:"no_ack"`     // the socket closed first
	AckP50Ms        float64          `json:"ack_p50_ms"` // of the ok acks
	AckP99Ms        float64          `json:"ack_p99_ms"`
	Disconnected    bool             `json:"disconnected"`
	DisconnectsAtMs []float64        `json:"disconnects_at_ms,omitempty"` // since the flood started
	DisconnectCause string           `json:"disconnect_cause,omitempty"`
	Reconnects      int              `json:"reconnects"`
	ConnectErrors   []string         `json:"connect_errors,omitempty"`

	// The main clients' heartbeats sent during the flood window ...
	MainAcks         int64            `json:"main_acks"`
	MainErrors       int64            `json:"main_errors"`
	MainErrorsByCode map[string]int64 `json:"main_errors_by_code,omitempty"`
	MainTimeouts     int64            `json:"main_timeouts"`
	MainP50Ms        float64          `json:"main_p50_ms"`
	MainP99Ms        float64          `json:"main_p99_ms"`
	// ... and those of the rest of the steady window.
	CalmAcks  int64   `json:"main_outside_acks"`
	CalmP50Ms float64 `json:"main_outside_p50_ms"`
	CalmP99Ms float64 `json:"main_outside_p99_ms"`
}

func (f *flood) summary(cfg Config, calm *counts) *FloodSummary {
	m := f.main.take()
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &FloodSummary{
		RatePerSec: cfg.FloodRate, Budget: int64(math.Ceil(cfg.FloodRate * cfg.FloodDuration.Seconds())),
		Sent: f.sent, AckedOK: f.ok, AcksByCode: mergeCounts(map[string]int64{}, f.byCode),
		Timeouts: f.timeouts, NoAck: f.noAck,
		AckP50Ms: f.hist.QuantileMs(.5), AckP99Ms: f.hist.QuantileMs(.99),
		Disconnected: len(f.discAt) > 0, DisconnectsAtMs: f.discAt, DisconnectCause: f.discCause,
		Reconnects: f.reconnects, ConnectErrors: f.connectErrs,
		MainAcks: m.acks, MainErrors: m.errs, MainErrorsByCode: m.byCode, MainTimeouts: m.timeouts,
		MainP50Ms: m.hist.QuantileMs(.5), MainP99Ms: m.hist.QuantileMs(.99),
		CalmAcks: calm.acks, CalmP50Ms: calm.hist.QuantileMs(.5), CalmP99Ms: calm.hist.QuantileMs(.99),
	}
	if f.sentFor > 0 {
		s.SentPerSec = float64(f.sent) / f.sentFor.Seconds()
	}
	return s
}

func printFlood(w io.Writer, f *FloodSummary) {
	fmt.Fprintf(w, "flood: %s/s offered, %d sent (%s/s), %d acked ok (p50 %s p99 %s ms), failures by code: %s, %d timeouts, %d without ack\n",
		fmtN(f.RatePerSec), f.Sent, fmtN(f.SentPerSec), f.AckedOK, fmtMs(f.AckP50Ms), fmtMs(f.AckP99Ms), fmtCounts(f.AcksByCode), f.Timeouts, f.NoAck)
	if f.Disconnected {
		at := make([]string, len(f.DisconnectsAtMs))
		for i, v := range f.DisconnectsAtMs {
			at[i] = fmtMs(v)
		}
		fmt.Fprintf(w, "flood: disconnected by the server at %s ms (%s), %d reconnects\n", strings.Join(at, ", "), f.DisconnectCause, f.Reconnects)
	} else {
		fmt.Fprintln(w, "flood: never disconnected")
	}
	if len(f.ConnectErrors) > 0 {
		fmt.Fprintf(w, "flood: %d failed (re)connections, first: %s\n", len(f.ConnectErrors), f.ConnectErrors[0])
	}
	fmt.Fprintf(w, "main clients during the flood: %d acks, p50 %s p99 %s ms, %d errors (%s), %d timeouts; rest of the window: %d acks, p50 %s p99 %s ms\n",
		f.MainAcks, fmtMs(f.MainP50Ms), fmtMs(f.MainP99Ms), f.MainErrors, fmtCounts(f.MainErrorsByCode), f.MainTimeouts,
		f.CalmAcks, fmtMs(f.CalmP50Ms), fmtMs(f.CalmP99Ms))
}

// fmtCounts prints counts largest first, "-" when there are none.
func fmtCounts(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
