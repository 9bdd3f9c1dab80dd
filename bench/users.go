package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/counting"
)

// TableUserIndex holds the user index's cost (issue 14): heartbeat and
// join/leave throughput with the index on against off.
const TableUserIndex = "user_index"

// Operations of the user index table.
const (
	OpHeartbeat = "heartbeat"
	OpJoinLeave = "join+leave"
)

// UserIndexScenario is one row of the user index table: Conns workers in a
// closed loop doing Op through two lua Services on one Redis, one with the
// user index off and one with it on. They take turns in short slices,
// off-on-on-off, Pairs times, so that whatever else the machine does
// weighs on both alike: on a shared machine two long windows measured one
// after the other differ by more than the index costs.
type UserIndexScenario struct {
	Backend string
	Op      string // OpHeartbeat or OpJoinLeave
	Conns   int
	Slice   time.Duration // one side's turn, measured (after a short warmup)
	Pairs   int           // off+on turns; Blocks groups them for the spread
	Blocks  int
	MaxOps  int64
}

// userSide is one of the two services of a scenario.
type userSide struct {
	raw   backend.Client
	cc    *counting.Client
	svc   *presence.Service
	conns []conn
	op    opFunc

	ops, totalOps, rts int64
	window             time.Duration
	cpu                cpuPcts // summed over turns, weighted by window
	hist               Hist
	errs               int64
	firstError         error
}

func newUserSide(ctx context.Context, t Target, sc UserIndexScenario, on bool) (*userSide, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	raw, err := t.Connect(cctx, sc.Backend)
	cancel()
	if err != nil {
		return nil, err
	}
	s := &userSide{raw: raw, cc: counting.New(raw)}
	s.svc, err = presence.New(s.cc, presence.Config{
		KeyPrefix:        uniquePrefix("users"),
		TTL:              time.Minute,
		ReaperInterval:   -1,
		Logger:           quietLogger(),
		DisableUserIndex: !on,
	})
	if err != nil {
		raw.Close()
		return nil, err
	}
	switch sc.Op {
	case OpHeartbeat:
		if s.conns, err = joinConns(ctx, s.svc, sc.Conns); err != nil {
			s.close()
			return nil, err
		}
		s.op = func(ctx context.Context, w int) (int, error) {
			c := &s.conns[w]
			if _, err := s.svc.Heartbeat(ctx, c.room, c.id, presence.HeartbeatParams{Epoch: &c.epoch}); err != nil {
				return 0, err
			}
			return 1, nil
		}
	case OpJoinLeave:
		// Each worker joins as a user of its own, so every join takes its
		// user online and every leave offline: the index's dearest case.
		state := json.RawMessage(`{"n":0}`)
		s.op = func(ctx context.Context, w int) (int, error) {
			room, id := "r"+strconv.Itoa(w/UsersPerRoom), "c"+strconv.Itoa(w)
			if _, err := s.svc.Join(ctx, room, id, "u"+strconv.Itoa(w), state); err != nil {
				return 0, err
			}
			if err := s.svc.Leave(ctx, room, id); err != nil {
				return 0, err
			}
			return 2, nil
		}
	default:
		s.close()
		return nil, fmt.Errorf("bench: unknown user index operation %q", sc.Op)
	}
	return s, nil
}

func (s *userSide) close() {
	leaveConns(s.svc, s.conns)
	s.svc.Close()
	s.raw.Close()
}

// turn runs one slice on this side and adds what it measured.
func (s *userSide) turn(ctx context.Context, sc UserIndexScenario, probe *Probe) (int64, time.Duration) {
	s.cc.Reset()
	res := runLoad(ctx, loadSpec{workers: sc.Conns, warmup: sc.Slice / 5, duration: sc.Slice, maxOps: sc.MaxOps}, probe, s.cc.Reset, s.op)
	s.ops += res.ops
	s.totalOps += res.totalOps
	s.rts += s.cc.RoundTrips()
	w := res.window.Seconds()
	s.cpu.redis += res.cpu.redis * w
	s.cpu.self += res.cpu.self * w
	s.cpu.other += res.cpu.other * w
	s.window += res.window
	s.hist.Merge(&res.hist)
	s.errs += res.errs
	if s.firstError == nil {
		s.firstError = res.firstError
	}
	return res.ops, res.window
}

// RunUserIndex measures sc: the index-on side's figures fill the row, the
// off side's its Off fields, and OnOffRatio compares the two.
func RunUserIndex(ctx context.Context, t Target, sc UserIndexScenario, probe *Probe) (Row, error) {
	row := Row{Table: TableUserIndex, Backend: sc.Backend, Strategy: "lua", Concurrency: sc.Conns, Op: sc.Op}
	runCtx, cancel := context.WithTimeout(ctx, time.Duration(2*sc.Pairs)*(sc.Slice*6/5)+2*time.Minute)
	defer cancel()
	off, err := newUserSide(runCtx, t, sc, false)
	if err != nil {
		return row, err
	}
	defer off.close()
	on, err := newUserSide(runCtx, t, sc, true)
	if err != nil {
		return row, err
	}
	defer on.close()

	blocks := max(1, min(sc.Blocks, sc.Pairs))
	var bOff, bOn [2]float64 // ops and seconds of the current block
	for i := range sc.Pairs {
		if runCtx.Err() != nil {
			break
		}
		// off-on, then on-off: a trend within a pair favours neither.
		order := []*userSide{off, on}
		if i%2 == 1 {
			order = []*userSide{on, off}
		}
		for _, s := range order {
			n, w := s.turn(runCtx, sc, probe)
			if s == on {
				bOn[0], bOn[1] = bOn[0]+float64(n), bOn[1]+w.Seconds()
			} else {
				bOff[0], bOff[1] = bOff[0]+float64(n), bOff[1]+w.Seconds()
			}
		}
		if (i+1)%(sc.Pairs/blocks) == 0 && bOff[0] > 0 && bOn[1] > 0 && bOff[1] > 0 {
			row.BlockRatios = append(row.BlockRatios, (bOn[0]/bOn[1])/(bOff[0]/bOff[1]))
			bOff, bOn = [2]float64{}, [2]float64{}
		}
	}
	row.Ops, row.Errors, row.DurationS = on.ops, on.errs+off.errs, on.window.Seconds()
	row.OpsPerSec = rate(on.ops, on.window)
	row.P50Ms, row.P99Ms = on.hist.QuantileMs(0.50), on.hist.QuantileMs(0.99)
	if w := on.window.Seconds(); w > 0 {
		row.RedisCPUPct, row.ClientCPUPct, row.OtherCPUPct = on.cpu.redis/w, on.cpu.self/w, on.cpu.other/w
	}
	row.RoundTripsPerOp = ratio(on.rts, on.totalOps)
	row.OffOpsPerSec = ptr(rate(off.ops, off.window))
	row.OffRoundTripsPerOp = ptr(ratio(off.rts, off.totalOps))
	if *row.OffOpsPerSec > 0 {
		row.OnOffRatio = ptr(row.OpsPerSec / *row.OffOpsPerSec)
	}
	first := on.firstError
	if first == nil {
		first = off.firstError
	}
	row.setFirstError(first)
	return row, nil
}

// userIndexJobs are the rows of the user index table, one per backend and
// operation.
func userIndexJobs(o Options, probe *Probe) []job {
	var jobs []job
	if o.UserIndexPairs <= 0 {
		return nil
	}
	for _, b := range o.Backends {
		for _, op := range []string{OpHeartbeat, OpJoinLeave} {
			sc := UserIndexScenario{Backend: b, Op: op, Conns: o.UserIndexConns, Slice: o.UserIndexSlice,
				Pairs: o.UserIndexPairs, Blocks: 5, MaxOps: o.MaxOps}
			jobs = append(jobs, job{fmt.Sprintf("user index off vs on: %s %s, %d conns, %d × 2 slices of %v", b, op, sc.Conns, sc.Pairs, sc.Slice),
				func(ctx context.Context) (Row, error) { return RunUserIndex(ctx, o.Target, sc, probe) }})
		}
	}
	return jobs
}

// WriteUserIndexTable writes each user index row: throughput with the
// index off and on, their ratio, and the ratio of each block of slices.
func WriteUserIndexTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| operation | backend | index off (ops/s) | index on (ops/s) | on / off | per block | round trips/op off → on | p50 / p99 on (ms) |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---|---|---|")
	for _, r := range rows {
		if r.Table != TableUserIndex || r.OnOffRatio == nil {
			continue
		}
		per := make([]string, len(r.BlockRatios))
		for i, b := range r.BlockRatios {
			per[i] = fmt.Sprintf("%.2f", b)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %.3f | %s | %.2f → %.2f | %s / %s |\n", r.Op, r.Backend, num(*r.OffOpsPerSec), num(r.OpsPerSec),
			*r.OnOffRatio, strings.Join(per, " "), *r.OffRoundTripsPerOp, r.RoundTripsPerOp, ms(r.P50Ms), ms(r.P99Ms))
	}
}
