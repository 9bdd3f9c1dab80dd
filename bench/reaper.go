package bench

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/realtime-message/presence"
)

// ReaperScenario compares the reaper modes (issue 15): how soon the conns
// of a node that stopped heartbeating leave on another node, and what
// reaping costs Redis with many idle conns and when they all expire.
type ReaperScenario struct {
	Backend string
	Modes   []string // "sweep", "notify"

	// Dead node: DeadConns conns in DeadRooms rooms heartbeat once, then
	// their node stops without leaving (as after SIGKILL); an observer
	// node with the mode's reaper, TTL and Interval reports their leaves.
	DeadConns, DeadRooms int
	TTL, Interval        time.Duration

	// Cost: IdleConns over IdleRooms, joined within at most JoinTimeout,
	// then Redis CPU over Window with nothing expiring; then every conn
	// expires, and the CPU until the observer reaped them all.
	IdleConns, IdleRooms int
	JoinTimeout, Window  time.Duration

	Progress io.Writer
}

// DefaultReaperScenario is the load: 100,000 conns over 10,000
// rooms, the default 3 s interval (backstop 30 s), a 10 s TTL for the
// dead node.
func DefaultReaperScenario() ReaperScenario {
	return ReaperScenario{
		Backend: "rueidis", Modes: []string{presence.ReaperSweep, presence.ReaperNotify},
		DeadConns: 1000, DeadRooms: 100, TTL: 10 * time.Second, Interval: 3 * time.Second,
		IdleConns: 100_000, IdleRooms: 10_000, JoinTimeout: 60 * time.Second, Window: 60 * time.Second,
	}
}

// ReaperRow is one mode's figures.
type ReaperRow struct {
	Mode string `json:"mode"`

	DeadConns int `json:"deadConns"`
	DeadLeft  int `json:"deadLeft"`
	// From a conn's last heartbeat to its leave on the observer, ms.
	LeaveP50Ms, LeaveP99Ms, LeaveMaxMs float64
	// From the end of its TTL to its leave (the expiry lag plus the
	// reaper's own), ms.
	AfterTTLP50Ms, AfterTTLMaxMs float64

	IdleConns int     `json:"idleConns"`
	IdleRooms int     `json:"idleRooms"`
	WindowS   float64 `json:"windowS"`
	// Redis CPU (used_cpu_sys + used_cpu_user) over the idle window, s.
	IdleCPUs float64 `json:"idleCpuS"`
	// Every idle conn expiring: seconds from the first expiry until the
	// observer reaped them all, Redis CPU meanwhile, conns reaped.
	ExpireS float64 `json:"expireS"`
	// From the end of the last-joined conn's TTL until all were reaped.
	LastAfterTTLS float64 `json:"lastAfterTtlS"`
	ExpireCPUs    float64 `json:"expireCpuS"`
	Expired       int     `json:"expired"`
}

func (sc ReaperScenario) logf(format string, args ...any) { progressf(sc.Progress, format, args...) }

// progressf writes one progress line to w, if any.
func progressf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// RunReaper measures every mode of sc in turn.
func RunReaper(ctx context.Context, t Target, sc ReaperScenario) ([]ReaperRow, error) {
	probe, err := NewProbe(t)
	if err != nil {
		return nil, err
	}
	defer probe.Close()
	var rows []ReaperRow
	for _, mode := range sc.Modes {
		row := ReaperRow{Mode: mode}
		sc.logf("reaper %s: dead node, %d conns in %d rooms, TTL %v", mode, sc.DeadConns, sc.DeadRooms, sc.TTL)
		if err := sc.dead(ctx, t, mode, &row); err != nil {
			return rows, fmt.Errorf("reaper %s: dead node: %w", mode, err)
		}
		sc.logf("reaper %s: %d conns over %d rooms, idle then expiring", mode, sc.IdleConns, sc.IdleRooms)
		if err := sc.cost(ctx, t, probe, mode, &row); err != nil {
			return rows, fmt.Errorf("reaper %s: cost: %w", mode, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func (sc ReaperScenario) open(ctx context.Context, t Target, prefix, mode string, ttl, interval time.Duration) (*presence.Service, error) {
	cfg := t.Config(sc.Backend)
	cfg.KeyPrefix, cfg.TTL, cfg.ReaperInterval, cfg.Logger = prefix, ttl, interval, quietLogger()
	cfg.Reaper, cfg.ReaperConfigureNotify = mode, true
	if mode == "" {
		cfg.Reaper = presence.ReaperSweep
	}
	return presence.Open(ctx, cfg)
}

// waitActive waits until svc's reaper runs the mode it was given.
func waitActive(ctx context.Context, svc *presence.Service) error {
	for {
		st := svc.ReaperStatus()
		if st.Active == st.Mode {
			return nil
		}
		if st.Reason != nil {
			return fmt.Errorf("the %s reaper is not running: %w", st.Mode, st.Reason)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (sc ReaperScenario) dead(ctx context.Context, t Target, mode string, row *ReaperRow) error {
	prefix := uniquePrefix("reapdead")
	observer, err := sc.open(ctx, t, prefix, mode, sc.TTL, sc.Interval)
	if err != nil {
		return err
	}
	defer observer.Close()
	if err := waitActive(ctx, observer); err != nil {
		return err
	}
	var mu sync.Mutex
	left := map[string]time.Time{}
	all := make(chan struct{})
	sub, err := observer.Subscribe(ctx, func(e presence.Event) {
		if e.Type != "leave" {
			return
		}
		mu.Lock()
		left[e.RoomID+"/"+e.ConnID] = time.Now()
		if len(left) == sc.DeadConns {
			close(all)
		}
		mu.Unlock()
	})
	if err != nil {
		return err
	}
	defer sub.Close()

	node, err := sc.open(ctx, t, prefix, "", sc.TTL, -1)
	if err != nil {
		return err
	}
	last := make([]time.Time, sc.DeadConns)
	perRoom := max(sc.DeadConns/max(sc.DeadRooms, 1), 1)
	err = parallel(ctx, sc.DeadConns, func(ctx context.Context, i int) error {
		room, c := "r"+strconv.Itoa(i/perRoom), "c"+strconv.Itoa(i)
		if _, err := node.Join(ctx, room, c, "u"+strconv.Itoa(i), nil); err != nil {
			return err
		}
		// The last heartbeat: its reply is the last sign of life.
		if _, err := node.Heartbeat(ctx, room, c, presence.HeartbeatParams{}); err != nil {
			return err
		}
		last[i] = time.Now()
		return nil
	})
	node.Close() // no leave: as if the process were killed
	if err != nil {
		return err
	}
	timeout := time.NewTimer(sc.TTL + 4*sc.Interval + 30*time.Second)
	defer timeout.Stop()
	select {
	case <-all:
	case <-timeout.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	var since, after []float64
	for i := range sc.DeadConns {
		at, ok := left["r"+strconv.Itoa(i/perRoom)+"/c"+strconv.Itoa(i)]
		if !ok {
			continue
		}
		since = append(since, durMs(at.Sub(last[i])))
		after = append(after, durMs(at.Sub(last[i].Add(sc.TTL))))
	}
	row.DeadConns, row.DeadLeft = sc.DeadConns, len(since)
	row.LeaveP50Ms, row.LeaveP99Ms, row.LeaveMaxMs = quantile(since, 0.5), quantile(since, 0.99), quantile(since, 1)
	row.AfterTTLP50Ms, row.AfterTTLMaxMs = quantile(after, 0.5), quantile(after, 1)
	return nil
}

func (sc ReaperScenario) cost(ctx context.Context, t Target, probe *Probe, mode string, row *ReaperRow) error {
	prefix := uniquePrefix("reapcost")
	// Long enough that nothing expires before the idle window ends: the
	// joins, the settling below, the window, and a margin.
	ttl := sc.JoinTimeout + sc.Interval + 2*time.Second + sc.Window + 5*time.Second
	loader, err := sc.open(ctx, t, prefix, "", ttl, -1)
	if err != nil {
		return err
	}
	defer loader.Close()
	jctx, cancel := context.WithTimeout(ctx, sc.JoinTimeout)
	perRoom := max(sc.IdleConns/max(sc.IdleRooms, 1), 1)
	var joined sync.Map
	start := time.Now()
	err = parallel(jctx, sc.IdleConns, func(ctx context.Context, i int) error {
		room, c := "r"+strconv.Itoa(i/perRoom), "c"+strconv.Itoa(i)
		if _, err := loader.Join(ctx, room, c, "u"+strconv.Itoa(i), nil); err != nil {
			return err
		}
		joined.Store(i, struct{}{})
		return nil
	})
	cancel()
	joinEnd := time.Now()
	n := 0
	joined.Range(func(any, any) bool { n++; return true })
	if err != nil && n == 0 {
		return err
	}
	row.IdleConns, row.IdleRooms = n, min(sc.IdleRooms, (n+perRoom-1)/perRoom)
	sc.logf("reaper %s: joined %d conns in %v", mode, n, time.Since(start).Round(time.Millisecond))

	observer, err := sc.open(ctx, t, prefix, mode, ttl, sc.Interval)
	if err != nil {
		return err
	}
	defer observer.Close()
	if err := waitActive(ctx, observer); err != nil {
		return err
	}
	// Let the first passes (sweep's first tick, notify's initial sweep) end.
	if err := sleep(ctx, sc.Interval+2*time.Second); err != nil {
		return err
	}
	cpu0, err := probe.CPU(ctx)
	if err != nil {
		return err
	}
	if err := sleep(ctx, sc.Window); err != nil {
		return err
	}
	cpu1, err := probe.CPU(ctx)
	if err != nil {
		return err
	}
	row.WindowS, row.IdleCPUs = sc.Window.Seconds(), cpu1-cpu0

	// Every conn expires between start+ttl and the end of its join.
	if err := sleep(ctx, time.Until(start.Add(ttl))); err != nil {
		return err
	}
	cpu0, _ = probe.CPU(ctx)
	t0 := time.Now()
	base := observer.Stats().Reaped
	deadline := t0.Add(sc.JoinTimeout + 4*sc.Interval + 60*time.Second)
	for int(observer.Stats().Reaped-base) < n && time.Now().Before(deadline) {
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	cpu1, _ = probe.CPU(ctx)
	row.ExpireS, row.ExpireCPUs, row.Expired = time.Since(t0).Seconds(), cpu1-cpu0, int(observer.Stats().Reaped-base)
	row.LastAfterTTLS = time.Since(joinEnd.Add(ttl)).Seconds()
	// Nothing to clean: every conn was reaped, or expires (its room's
	// keys with the lookback).
	return nil
}

// parallel runs fn for 0..n-1 on 64 goroutines, stopping at ctx's end;
// it returns the first error.
func parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	for range min(n, 64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func durMs(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[min(int(q*float64(len(s)-1)+0.5), len(s)-1)]
}

// WriteReaperTable writes rows as Markdown.
func WriteReaperTable(w io.Writer, sc ReaperScenario, rows []ReaperRow) {
	fmt.Fprintf(w, "Dead node: %d conns in %d rooms stop heartbeating without leave; TTL %v, reaper interval %v (notify backstop %v); time from each conn's last heartbeat to its leave on another node.\n\n",
		sc.DeadConns, sc.DeadRooms, sc.TTL, sc.Interval, 10*sc.Interval)
	fmt.Fprintln(w, "| reaper | left | last heartbeat → leave p50 | p99 | max | TTL end → leave p50 | max |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %d/%d | %.0f ms | %.0f ms | %.0f ms | %.0f ms | %.0f ms |\n",
			r.Mode, r.DeadLeft, r.DeadConns, r.LeaveP50Ms, r.LeaveP99Ms, r.LeaveMaxMs, r.AfterTTLP50Ms, r.AfterTTLMaxMs)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Redis CPU (INFO used_cpu_sys + used_cpu_user) of one observer node's reaper: idle conns over the window, then all of them expiring.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| reaper | conns | rooms | idle window | Redis CPU idle | per minute | all expire: reaped | first TTL end → all reaped | last TTL end → all reaped | Redis CPU |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		perMin := 0.0
		if r.WindowS > 0 {
			perMin = r.IdleCPUs / r.WindowS * 60
		}
		fmt.Fprintf(w, "| %s | %d | %d | %.0f s | %.2f s | %.2f s | %d | %.1f s | %.1f s | %.2f s |\n",
			r.Mode, r.IdleConns, r.IdleRooms, r.WindowS, r.IdleCPUs, perMin, r.Expired, r.ExpireS, r.LastAfterTTLS, r.ExpireCPUs)
	}
}
