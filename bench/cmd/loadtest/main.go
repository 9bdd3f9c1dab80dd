// Command loadtest is an end-to-end load generator for the presence server
// (cmd/presence-server, or the Node.js original): N Socket.IO clients over
// R rooms join, then heartbeat at H per second each, every heartbeat
// patching the state so each one fans an update event out to its room. It
// counts acks, error acks, ack timeouts and the presence:events received,
// checks that every update reached every other member of its room, and
// reports throughput and ack latency every interval and at the end.
//
//	TARGET_URL=http://127.0.0.1:3000 ROOM_COUNT=100 USERS_PER_ROOM=5 \
//	HEARTBEATS_PER_SEC=10 TEST_DURATION_MS=30000 RAMP_UP_MS=5000 \
//	go run ./bench/cmd/loadtest
//
// Environment (the knobs of the original presence-load-test.mjs):
//
//	TARGET_URL          server URL (default http://127.0.0.1:3000)
//	ROOM_COUNT          rooms (default 100)
//	USERS_PER_ROOM      clients per room (default 5)
//	HEARTBEATS_PER_SEC  heartbeats per second per client (default 10)
//	TEST_DURATION_MS    whole test, ramp-up included (default 30000)
//	RAMP_UP_MS          clients connect and join spread over this (default 5000)
//	ACK_TIMEOUT_MS      an ack later than this counts as a timeout (default 5000)
//
// and, beyond the original:
//
//	REPORT_INTERVAL_MS  interval report period (default 5000)
//	PATCH_STATE         1 (default): every heartbeat patches the state; 0: none
//	SERVER_PID          the server's pid: report its CPU, and CPU per 1,000 acks
//	REDIS_PID           redis-server's pid: report its CPU
//	LOADTEST_CLIENT     socketio (default): github.com/zishang520/socket.io
//	                    clients/socket/v3, the Go Socket.IO client; raw: a
//	                    minimal Socket.IO-over-WebSocket client of this
//	                    program that decodes only what it reads, to keep
//	                    the load generator's own CPU small beside the
//	                    server's on a small machine
//	FLOOD_RATE          heartbeats/s of one extra flooding socket (default 0:
//	                    none); see below
//	FLOOD_DURATION_MS   how long it floods (default 10000)
//	EXTRA_ROOMS, DASHBOARD_URL, DASHBOARD_TOKEN
//	                    idle rooms joined before the load, and a dashboard
//	                    viewer during it (see dashConfig in dashboard.go)
//
// Failure acks are counted by their code field (errors_by_code; "none"
// when the ack has no code, "(no ack)" when the socket closed first).
// With SERVER_PID, the server's resident memory (VmRSS) is sampled every
// 250 ms: server_rss_start_mb before the first client, server_rss_peak_mb
// the highest sample.
//
// The flood: once ramp-up is over, one more socket (the raw client,
// whatever LOADTEST_CLIENT says) joins a room of its own and sends
// heartbeats at FLOOD_RATE without waiting for their acks, at most
// FLOOD_RATE × FLOOD_DURATION_MS/1000 of them and for at most
// FLOOD_DURATION_MS. Its acks are still timed out after ACK_TIMEOUT_MS.
// If the server disconnects it, it reconnects at most once a second until
// the window ends. It is counted apart (the "flood" object): sent, acked
// ok, failures by code, timeouts, disconnects and when they came. The
// main clients' ack latency over heartbeats sent during the flood window is
// reported beside that of the rest of the steady window, so the flood's
// effect on everyone else shows; the main figures include both.
//
// Figures of the final report are taken over the steady window, from the
// end of ramp-up to the end of the test. Every loop is bounded: the test
// ends after TEST_DURATION_MS plus at most ACK_TIMEOUT_MS and a 5 s drain.
// The exit status is 1 when any ack failed or timed out, or an update was
// not delivered.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/realtime-message/presence/bench"
)

func main() {
	asJSON := flag.Bool("json", false, "print the final summary as one JSON object on stdout")
	cpuProfile := flag.String("cpuprofile", "", "write this load generator's own CPU profile to the file")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: [ENV=...] loadtest [-json]; see go doc ./bench/cmd/loadtest for the environment")
	}
	flag.Parse()
	cfg, err := configFromEnv()
	if err != nil {
		log.Fatal("loadtest: ", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal("loadtest: ", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal("loadtest: ", err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	sum, err := run(ctx, cfg, os.Stderr)
	if err != nil {
		log.Fatal("loadtest: ", err)
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(sum)
	}
	if !sum.Pass {
		stop()
		if *cpuProfile != "" {
			pprof.StopCPUProfile()
		}
		os.Exit(1)
	}
}

// Config is the test's shape; see the package documentation.
type Config struct {
	TargetURL      string
	Rooms          int
	UsersPerRoom   int
	HeartbeatsPerS float64
	Duration       time.Duration
	RampUp         time.Duration
	AckTimeout     time.Duration
	ReportEvery    time.Duration
	Patch          bool
	ServerPID      int
	RedisPID       int
	Client         string // LOADTEST_CLIENT
	FloodRate      float64
	FloodDuration  time.Duration
	Dash           dashConfig // EXTRA_ROOMS, DASHBOARD_URL: see dashboard.go
}

func configFromEnv() (Config, error) {
	c := Config{TargetURL: "http://127.0.0.1:3000"}
	if v := os.Getenv("TARGET_URL"); v != "" {
		c.TargetURL = v
	}
	if _, err := url.Parse(c.TargetURL); err != nil {
		return c, fmt.Errorf("TARGET_URL: %w", err)
	}
	ints := []struct {
		env      string
		dst      *int
		def, max int
	}{
		{"ROOM_COUNT", &c.Rooms, 100, 100_000},
		{"USERS_PER_ROOM", &c.UsersPerRoom, 5, 1000},
		{"SERVER_PID", &c.ServerPID, 0, 1 << 30},
		{"REDIS_PID", &c.RedisPID, 0, 1 << 30},
	}
	for _, f := range ints {
		*f.dst = f.def
		if v := os.Getenv(f.env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > f.max || (n == 0 && f.def > 0) {
				return c, fmt.Errorf("%s=%q: want an integer in [1, %d]", f.env, v, f.max)
			}
			*f.dst = n
		}
	}
	if c.Rooms*c.UsersPerRoom > 100_000 {
		return c, fmt.Errorf("%d clients: at most 100,000", c.Rooms*c.UsersPerRoom)
	}
	c.HeartbeatsPerS = 10
	if v := os.Getenv("HEARTBEATS_PER_SEC"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 1000 {
			return c, fmt.Errorf("HEARTBEATS_PER_SEC=%q: want a number in (0, 1000]", v)
		}
		c.HeartbeatsPerS = f
	}
	durs := []struct {
		env string
		dst *time.Duration
		def time.Duration
	}{
		{"TEST_DURATION_MS", &c.Duration, 30 * time.Second},
		{"RAMP_UP_MS", &c.RampUp, 5 * time.Second},
		{"ACK_TIMEOUT_MS", &c.AckTimeout, 5 * time.Second},
		{"REPORT_INTERVAL_MS", &c.ReportEvery, 5 * time.Second},
	}
	for _, d := range durs {
		*d.dst = d.def
		if v := os.Getenv(d.env); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || n > 3_600_000 {
				return c, fmt.Errorf("%s=%q: want milliseconds in [0, 3600000]", d.env, v)
			}
			*d.dst = time.Duration(n) * time.Millisecond
		}
	}
	if c.Duration <= c.RampUp {
		return c, fmt.Errorf("TEST_DURATION_MS (%v) must exceed RAMP_UP_MS (%v)", c.Duration, c.RampUp)
	}
	if c.AckTimeout <= 0 || c.ReportEvery <= 0 {
		return c, errors.New("ACK_TIMEOUT_MS and REPORT_INTERVAL_MS must be positive")
	}
	if v := os.Getenv("FLOOD_RATE"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1_000_000 {
			return c, fmt.Errorf("FLOOD_RATE=%q: want a number in [0, 1000000]", v)
		}
		c.FloodRate = f
	}
	c.FloodDuration = 10 * time.Second
	if v := os.Getenv("FLOOD_DURATION_MS"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 || n > 3_600_000 {
			return c, fmt.Errorf("FLOOD_DURATION_MS=%q: want milliseconds in [1, 3600000]", v)
		}
		c.FloodDuration = time.Duration(n) * time.Millisecond
	}
	c.Patch = os.Getenv("PATCH_STATE") != "0"
	var err error
	if c.Dash, err = dashConfigFromEnv(); err != nil {
		return c, err
	}
	c.Client = "socketio"
	if v := os.Getenv("LOADTEST_CLIENT"); v != "" {
		if _, ok := dialers[v]; !ok {
			return c, fmt.Errorf("LOADTEST_CLIENT=%q: want socketio or raw", v)
		}
		c.Client = v
	}
	return c, nil
}

// client is one simulated user: a socket, its room and what it saw.
type client struct {
	idx, room, slot int // global index, room, place in the room
	userID          string
	t               transport

	joined   atomic.Bool
	epoch    atomic.Int64
	seq      atomic.Int64 // the last heartbeat seq sent
	failMu   sync.Mutex
	failed   []int64 // seqs whose heartbeat failed or timed out
	base     []int64 // per room slot: that member's seq when this client's join was acked
	received []atomic.Int64
	// updates from each room slot with a seq past base; self included
	maxSeen []atomic.Int64 // per room slot: the highest seq seen in its updates
}

// counts are the figures of one interval (or of the steady window).
type counts struct {
	hist     bench.Hist
	acks     int64 // ok:true heartbeat acks
	errs     int64 // ok:false heartbeat acks
	timeouts int64
	errMsgs  map[string]int64 // failures by message
	byCode   map[string]int64 // errs by the ack's code
}

func (s *counts) add(o *counts) {
	s.hist.Merge(&o.hist)
	s.acks += o.acks
	s.errs += o.errs
	s.timeouts += o.timeouts
	for m, n := range o.errMsgs {
		if s.errMsgs == nil {
			s.errMsgs = map[string]int64{}
		}
		s.errMsgs[m] += n
	}
	s.byCode = mergeCounts(s.byCode, o.byCode)
}

func mergeCounts(dst, src map[string]int64) map[string]int64 {
	for k, n := range src {
		if dst == nil {
			dst = map[string]int64{}
		}
		dst[k] += n
	}
	return dst
}

// noAck is the code of a failure that is no ack: the socket closed, or
// the emit could not be written.
const noAck = "(no ack)"

// failCode is the errors_by_code key of a failure ack.
func failCode(a ack) string {
	if a.Code == "" {
		return "none"
	}
	return a.Code
}

// stats collects the running interval's counts from every ack callback.
type stats struct {
	mu sync.Mutex
	c  counts
}

func (s *stats) ack(d time.Duration) {
	s.mu.Lock()
	s.c.acks++
	s.c.hist.Record(d)
	s.mu.Unlock()
}

// fail counts a failure: a timeout, or an error whose code is counted
// in byCode.
func (s *stats) fail(msg, code string, timeout bool) {
	s.mu.Lock()
	if timeout {
		s.c.timeouts++
	} else {
		s.c.errs++
		if s.c.byCode == nil {
			s.c.byCode = map[string]int64{}
		}
		s.c.byCode[code]++
	}
	if s.c.errMsgs == nil {
		s.c.errMsgs = map[string]int64{}
	}
	s.c.errMsgs[msg]++
	s.mu.Unlock()
}

// take returns the interval's counts and starts the next interval.
func (s *stats) take() *counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.c
	s.c = counts{}
	return &out
}

// Summary is the final report.
type Summary struct {
	Clients          int     `json:"clients"`
	Rooms            int     `json:"rooms"`
	UsersPerRoom     int     `json:"users_per_room"`
	HeartbeatsPerSec float64 `json:"heartbeats_per_sec_per_user"`
	OfferedPerSec    float64 `json:"offered_per_sec"`
	SteadyS          float64 `json:"steady_s"`

	Connected   int              `json:"connected"`
	JoinErrors  int64            `json:"join_errors"`
	Acks        int64            `json:"acks"`
	AcksPerSec  float64          `json:"acks_per_sec"`
	Errors      int64            `json:"errors"`
	Timeouts    int64            `json:"timeouts"`
	ErrorCounts map[string]int64 `json:"error_counts,omitempty"`
	// ErrorsByCode splits Errors by the failure ack's code.
	ErrorsByCode map[string]int64 `json:"errors_by_code"`
	P50Ms        float64          `json:"p50_ms"`
	P95Ms        float64          `json:"p95_ms"`
	P99Ms        float64          `json:"p99_ms"`
	MaxMs        float64          `json:"max_ms"`

	Events          int64   `json:"presence_events"` // every presence:event received, whole test
	EventsPerSec    float64 `json:"presence_events_per_sec"`
	UpdatesExpected int64   `json:"updates_expected"` // to other members, sent after they joined
	UpdatesMissing  int64   `json:"updates_missing"`  // neither delivered nor superseded by a delivered later state
	UpdatesMerged   int64   `json:"updates_merged"`   // not delivered on their own: merged into a later delivered update

	ServerCPUPct        float64 `json:"server_cpu_pct,omitempty"`
	ServerCPUMsPer1kAck float64 `json:"server_cpu_ms_per_1000_acks,omitempty"`
	RedisCPUPct         float64 `json:"redis_cpu_pct,omitempty"`
	LoadtestCPUPct      float64 `json:"loadtest_cpu_pct"`
	OtherCPUPct         float64 `json:"other_cpu_pct"` // the rest of the machine meanwhile
	ServerRSSStartMB    float64 `json:"server_rss_start_mb,omitempty"`
	ServerRSSPeakMB     float64 `json:"server_rss_peak_mb,omitempty"`

	Flood     *FloodSummary     `json:"flood,omitempty"`
	Dashboard *DashboardSummary `json:"dashboard,omitempty"`

	Pass bool `json:"pass"`
}

func run(ctx context.Context, cfg Config, logw io.Writer) (*Summary, error) {
	n := cfg.Rooms * cfg.UsersPerRoom
	fmt.Fprintf(logw, "loadtest: %d clients in %d rooms × %d users → %s, %g heartbeats/s each (%s/s offered), patchState %v; %v with %v ramp-up, ack timeout %v; client %s\n",
		n, cfg.Rooms, cfg.UsersPerRoom, cfg.TargetURL, cfg.HeartbeatsPerS, fmtN(float64(n)*cfg.HeartbeatsPerS), cfg.Patch, cfg.Duration, cfg.RampUp, cfg.AckTimeout, cfg.Client)

	clients := make([]*client, n)
	byUser := make(map[string]*client, n)
	for i := range clients {
		room, slot := i/cfg.UsersPerRoom, i%cfg.UsersPerRoom
		c := &client{idx: i, room: room, slot: slot, userID: "lt-u" + strconv.Itoa(i),
			base: make([]int64, cfg.UsersPerRoom), received: make([]atomic.Int64, cfg.UsersPerRoom),
			maxSeen: make([]atomic.Int64, cfg.UsersPerRoom)}
		clients[i] = c
		byUser[c.userID] = c
	}
	roomID := func(r int) string { return "lt-room-" + strconv.Itoa(r) }

	var (
		cur        stats  // the running interval
		steady     counts // the steady window, merged from intervals
		events     atomic.Int64
		joinErrs   atomic.Int64
		connected  atomic.Int64
		inSteady   atomic.Bool
		heartbeats sync.WaitGroup
		stopHB     = make(chan struct{})
		calm       stats  // steady window outside the flood, for comparison
		fl         *flood // nil without FLOOD_RATE
	)
	if cfg.FloodRate > 0 {
		fl = &flood{}
	}
	dl, err := startDashLoad(ctx, cfg.Dash, time.Now().Add(cfg.Duration+cfg.AckTimeout+time.Minute), logw)
	if err != nil {
		return nil, err
	}
	defer dl.stop()
	rss := startRSS(cfg.ServerPID)
	defer rss.stop()
	start := time.Now()
	testEnd := start.Add(cfg.Duration)

	onEvent := func(c *client, ev presenceEvent) {
		events.Add(1)
		if ev.Type != "update" {
			return
		}
		from, ok := byUser[ev.UserID]
		if !ok || from.room != c.room {
			return
		}
		if ev.State.Seq > atomic.LoadInt64(&c.base[from.slot]) {
			c.received[from.slot].Add(1)
		}
		for m := &c.maxSeen[from.slot]; ; {
			if cur := m.Load(); ev.State.Seq <= cur || m.CompareAndSwap(cur, ev.State.Seq) {
				break
			}
		}
	}

	heartbeat := func(c *client) {
		seq := c.seq.Add(1)
		payload := map[string]any{"epoch": c.epoch.Load()}
		if cfg.Patch {
			payload["patchState"] = map[string]any{"seq": seq}
		}
		sent := time.Now()
		var once atomic.Bool
		c.t.emit("presence:heartbeat", payload, cfg.AckTimeout, func(a ack, err error) {
			if !once.CompareAndSwap(false, true) {
				return
			}
			d := time.Since(sent)
			// The same outcome also goes to the flood comparison's side.
			side := &calm
			if fl != nil && fl.during(sent) {
				side = &fl.main
			} else if !inSteady.Load() {
				side = nil
			}
			record := func(s *stats) {
				if s == nil {
					return
				}
				switch {
				case err != nil:
					s.fail(err.Error(), noAck, isTimeout(err))
				case !a.OK:
					s.fail(a.Error, failCode(a), false)
				case d > cfg.AckTimeout:
					s.fail("ack later than ACK_TIMEOUT_MS", "", true)
				default:
					s.ack(d)
				}
			}
			record(&cur)
			record(side)
			switch {
			case err != nil, !a.OK, d > cfg.AckTimeout:
				c.fail(seq)
			case a.Epoch != nil:
				c.epoch.Store(int64(*a.Epoch))
			}
		})
	}

	// One goroutine per client: connect at its ramp-up slot, join, then
	// heartbeat until the test ends.
	var setup sync.WaitGroup
	for _, c := range clients {
		setup.Add(1)
		heartbeats.Add(1)
		go func(c *client) {
			defer heartbeats.Done()
			at := start.Add(time.Duration(int64(cfg.RampUp) * int64(c.idx) / int64(n)))
			select {
			case <-time.After(time.Until(at)):
			case <-ctx.Done():
				setup.Done()
				return
			}
			err := c.connect(ctx, cfg, onEvent)
			if err == nil {
				connected.Add(1)
				err = c.join(ctx, cfg, roomID(c.room), clients[c.room*cfg.UsersPerRoom:(c.room+1)*cfg.UsersPerRoom])
			}
			setup.Done()
			if err != nil {
				joinErrs.Add(1)
				fmt.Fprintf(logw, "loadtest: client %d: %v\n", c.idx, err)
				return
			}
			period := time.Duration(float64(time.Second) / cfg.HeartbeatsPerS)
			next := time.Now().Add(time.Duration(rand.Int64N(int64(period))))
			t := time.NewTimer(time.Until(next))
			defer t.Stop()
			for {
				select {
				case <-t.C:
				case <-stopHB:
					return
				case <-ctx.Done():
					return
				}
				if !time.Now().Before(testEnd) {
					return
				}
				heartbeat(c)
				next = next.Add(period)
				if d := time.Until(next); d < -period {
					next = time.Now() // far behind: skip rather than burst
				}
				t.Reset(time.Until(next))
			}
		}(c)
	}

	// Reports every interval until the test ends.
	cpu := newCPU(cfg)
	steadyStart := start.Add(cfg.RampUp)
	var steadyCPU *cpuSnap // the window's first snapshot
	ticker := time.NewTicker(cfg.ReportEvery)
	defer ticker.Stop()
	last, lastEvents := time.Now(), int64(0)
	lastCPU := cpu.snap()
	rampDone := make(chan struct{})
	go func() { setup.Wait(); close(rampDone) }()
	steadyTimer := time.NewTimer(time.Until(steadyStart))
	defer steadyTimer.Stop()
	endTimer := time.NewTimer(time.Until(testEnd))
	defer endTimer.Stop()
	report := func(now time.Time) {
		iv := cur.take()
		if inSteady.Load() {
			steady.add(iv)
		}
		el := now.Sub(last).Seconds()
		if el < 0.25 && iv.acks+iv.errs+iv.timeouts < 100 {
			return // a sliver after the last report: merged, not printed
		}
		ev := events.Load()
		snap := cpu.snap()
		fmt.Fprintf(logw, "[%5.1fs] clients %d | acks %s/s | errors %d | timeouts %d | events %s/s | ack p50 %s p95 %s p99 %s ms%s\n",
			now.Sub(start).Seconds(), connected.Load(), fmtN(float64(iv.acks)/el), iv.errs, iv.timeouts,
			fmtN(float64(ev-lastEvents)/el), fmtMs(iv.hist.QuantileMs(.5)), fmtMs(iv.hist.QuantileMs(.95)), fmtMs(iv.hist.QuantileMs(.99)),
			cpu.describe(lastCPU, snap, iv.acks))
		last, lastEvents, lastCPU = now, ev, snap
	}
loop:
	for {
		select {
		case now := <-ticker.C:
			report(now)
		case <-steadyTimer.C:
			report(time.Now()) // the ramp-up's last interval ends here
			<-rampDone         // joins late past RAMP_UP_MS would skew the window
			if d := time.Since(steadyStart); d > time.Second {
				fmt.Fprintf(logw, "loadtest: joins finished %v after RAMP_UP_MS; the steady window starts then\n", d.Round(time.Millisecond))
			}
			cur.take() // drop what came in while waiting for joins
			steadyStart = time.Now()
			last, lastCPU = steadyStart, cpu.snap()
			lastEvents = events.Load()
			first := lastCPU
			steadyCPU = &first
			inSteady.Store(true)
			ticker.Reset(cfg.ReportEvery)
			if fl != nil {
				fl.start(ctx, cfg, testEnd, logw)
			}
		case <-endTimer.C:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	steadyEnd := time.Now()
	close(stopHB)
	heartbeats.Wait()
	if fl != nil {
		fl.wait() // bounded: the window's end plus the ack timeout
	}
	report(steadyEnd)
	inSteady.Store(false)
	endCPU := cpu.snap()
	if steadyCPU == nil {
		steadyCPU = &endCPU
	}

	// Drain: late acks (up to the ack timeout) and in-flight events, until
	// every expected update arrived or nothing changes for a second.
	// An update counts as delivered when its event arrived, or when an
	// event of a later seq of the same member did: the server may merge
	// queued heartbeats of a socket into one update carrying their merged
	// state, and a member's view then skips the merged seqs but ends where
	// it would have. Merged counts those.
	expected := func() (exp, missing, merged int64) {
		for _, m := range clients {
			if !m.joined.Load() {
				continue
			}
			for _, s := range clients[m.room*cfg.UsersPerRoom : (m.room+1)*cfg.UsersPerRoom] {
				if s == m || !s.joined.Load() || !cfg.Patch {
					continue
				}
				base := atomic.LoadInt64(&m.base[s.slot])
				e := s.sentAfter(base)
				exp += e
				lost := s.sentAfter(max(base, m.maxSeen[s.slot].Load()))
				missing += lost
				if got := m.received[s.slot].Load(); got < e-lost {
					merged += e - lost - got
				}
			}
		}
		return exp, missing, merged
	}
	drainEnd := time.Now().Add(cfg.AckTimeout + 5*time.Second)
	prevEvents, quiet := events.Load(), 0
	for time.Now().Before(drainEnd) && ctx.Err() == nil {
		time.Sleep(250 * time.Millisecond)
		_, missing, _ := expected()
		ev := events.Load()
		if ev == prevEvents {
			quiet++
		} else {
			quiet = 0
		}
		prevEvents = ev
		if (missing == 0 && quiet >= 2) || quiet >= 8 {
			break
		}
	}
	late := cur.take() // acks after the window: count errors and timeouts, not throughput
	exp, missing, merged := expected()
	for _, c := range clients {
		if c.t != nil {
			c.t.close()
		}
	}

	win := steadyEnd.Sub(steadyStart).Seconds()
	sum := &Summary{
		Clients: n, Rooms: cfg.Rooms, UsersPerRoom: cfg.UsersPerRoom, HeartbeatsPerSec: cfg.HeartbeatsPerS,
		OfferedPerSec: float64(n) * cfg.HeartbeatsPerS, SteadyS: win,
		Connected: int(connected.Load()), JoinErrors: joinErrs.Load(),
		Acks: steady.acks, AcksPerSec: float64(steady.acks) / win,
		Errors: steady.errs + late.errs, Timeouts: steady.timeouts + late.timeouts,
		P50Ms: steady.hist.QuantileMs(.5), P95Ms: steady.hist.QuantileMs(.95), P99Ms: steady.hist.QuantileMs(.99), MaxMs: steady.hist.QuantileMs(1),
		Events: events.Load(), EventsPerSec: float64(events.Load()) / time.Since(start).Seconds(),
		UpdatesExpected: exp, UpdatesMissing: missing, UpdatesMerged: merged,
	}
	sum.ErrorCounts = steady.errMsgs
	for m, k := range late.errMsgs {
		if sum.ErrorCounts == nil {
			sum.ErrorCounts = map[string]int64{}
		}
		sum.ErrorCounts[m] += k
	}
	sum.ErrorsByCode = mergeCounts(mergeCounts(map[string]int64{}, steady.byCode), late.byCode)
	cpu.fill(sum, *steadyCPU, endCPU, steady.acks)
	sum.ServerRSSStartMB, sum.ServerRSSPeakMB = rss.stop()
	if fl != nil {
		sum.Flood = fl.summary(cfg, calm.take())
	}
	sum.Dashboard = dl.stop()
	sum.Pass = sum.JoinErrors == 0 && sum.Errors == 0 && sum.Timeouts == 0 && sum.UpdatesMissing == 0 && sum.Acks > 0
	printSummary(logw, sum)
	return sum, nil
}

// connect opens the client's connection and waits for it.
func (c *client) connect(ctx context.Context, cfg Config, onEvent func(*client, presenceEvent)) error {
	t, err := dialers[cfg.Client](ctx, cfg.TargetURL, c.userID, cfg.AckTimeout, func(ev presenceEvent) { onEvent(c, ev) })
	if err != nil {
		return err
	}
	c.t = t
	return nil
}

// join sends presence:join and waits for its ack; room holds the room's
// clients, whose seqs become this client's delivery baseline.
func (c *client) join(ctx context.Context, cfg Config, roomID string, room []*client) error {
	ch := make(chan error, 1)
	done := func(a ack, err error) {
		if err != nil {
			ch <- err
			return
		}
		if !a.OK {
			ch <- fmt.Errorf("join refused: %v", a.Error)
			return
		}
		if a.Self != nil {
			c.epoch.Store(int64(a.Self.Epoch))
		}
		// Updates of heartbeats sent from now on must reach this client.
		for _, s := range room {
			atomic.StoreInt64(&c.base[s.slot], s.seq.Load())
		}
		c.joined.Store(true)
		ch <- nil
	}
	payload := map[string]any{"roomId": roomID, "userId": c.userID, "state": map[string]any{"seq": 0}}
	c.t.emit("presence:join", payload, cfg.AckTimeout, done)
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *client) fail(seq int64) {
	c.failMu.Lock()
	c.failed = append(c.failed, seq)
	c.failMu.Unlock()
}

// sentAfter counts this client's heartbeats with seq > base that did not
// fail: their updates must reach every member that joined before base.
func (c *client) sentAfter(base int64) int64 {
	n := c.seq.Load() - base
	c.failMu.Lock()
	for _, s := range c.failed {
		if s > base {
			n--
		}
	}
	c.failMu.Unlock()
	return max(n, 0)
}

func printSummary(w io.Writer, s *Summary) {
	fmt.Fprintf(w, "\n=== loadtest summary (steady window %.1fs) ===\n", s.SteadyS)
	fmt.Fprintf(w, "clients %d connected of %d (%d rooms × %d), join errors %d\n", s.Connected, s.Clients, s.Rooms, s.UsersPerRoom, s.JoinErrors)
	fmt.Fprintf(w, "offered %s heartbeats/s; acked %s/s (%d acks)\n", fmtN(s.OfferedPerSec), fmtN(s.AcksPerSec), s.Acks)
	fmt.Fprintf(w, "ack latency p50 %s ms, p95 %s ms, p99 %s ms, max %s ms\n", fmtMs(s.P50Ms), fmtMs(s.P95Ms), fmtMs(s.P99Ms), fmtMs(s.MaxMs))
	fmt.Fprintf(w, "errors %d, timeouts %d", s.Errors, s.Timeouts)
	for m, n := range s.ErrorCounts {
		fmt.Fprintf(w, "; %q ×%d", m, n)
	}
	fmt.Fprintln(w)
	if len(s.ErrorsByCode) > 0 {
		fmt.Fprintf(w, "errors by code: %s\n", fmtCounts(s.ErrorsByCode))
	}
	fmt.Fprintf(w, "presence:event received %d (%s/s); updates to other members: %d expected, %d missing, %d merged into a later update\n",
		s.Events, fmtN(s.EventsPerSec), s.UpdatesExpected, s.UpdatesMissing, s.UpdatesMerged)
	if s.ServerCPUPct > 0 {
		fmt.Fprintf(w, "server CPU %.0f%% of one core, %.1f ms per 1,000 acks\n", s.ServerCPUPct, s.ServerCPUMsPer1kAck)
	}
	if s.RedisCPUPct > 0 {
		fmt.Fprintf(w, "redis CPU %.0f%% of one core\n", s.RedisCPUPct)
	}
	if s.ServerRSSPeakMB > 0 {
		fmt.Fprintf(w, "server RSS %.1f MB at the start, peak %.1f MB\n", s.ServerRSSStartMB, s.ServerRSSPeakMB)
	}
	fmt.Fprintf(w, "loadtest CPU %.0f%% of one core; other processes %.0f%%\n", s.LoadtestCPUPct, s.OtherCPUPct)
	if f := s.Flood; f != nil {
		printFlood(w, f)
	}
	verdict := "PASS"
	if !s.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintln(w, verdict)
}

func fmtN(v float64) string {
	s := strconv.FormatFloat(v, 'f', 0, 64)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func fmtMs(v float64) string {
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}
