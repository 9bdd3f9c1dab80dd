package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend/counting"
)

// TableUserIndex holds the user index's cost (issue 14): heartbeat and
// join/leave throughput with the index off and on, measured alternately
// in one run.
const TableUserIndex = "user_index"

// Operations of the user index table.
const (
	OpHeartbeat = "heartbeat"
	OpJoinLeave = "join+leave"
)

// UserIndexScenario is one row of the user index table: Conns workers in a
// closed loop, each on its own conn, doing Op through a lua Service with
// the user index on or off.
type UserIndexScenario struct {
	Backend   string
	Op        string // OpHeartbeat or OpJoinLeave
	UserIndex bool
	Conns     int
	Warmup    time.Duration
	Duration  time.Duration
	MaxOps    int64
}

// RunUserIndex measures sc. A join+leave worker joins its conn (as a user
// of its own, so every join takes the user online and every leave takes it
// offline: the index's most expensive case) and leaves it again; both calls
// count as operations. A heartbeat worker heartbeats its joined conn with
// its epoch.
func RunUserIndex(ctx context.Context, t Target, sc UserIndexScenario, probe *Probe) (Row, error) {
	row := Row{Table: TableUserIndex, Backend: sc.Backend, Strategy: "lua", Concurrency: sc.Conns, Op: sc.Op, UserIndex: ptr(sc.UserIndex)}
	runCtx, cancel := context.WithTimeout(ctx, sc.Warmup+sc.Duration+time.Minute)
	defer cancel()
	cctx, ccancel := context.WithTimeout(runCtx, 15*time.Second)
	raw, err := t.Connect(cctx, sc.Backend)
	ccancel()
	if err != nil {
		return row, err
	}
	defer raw.Close()
	cc := counting.New(raw)
	svc, err := presence.New(cc, presence.Config{
		KeyPrefix:        uniquePrefix("users"),
		TTL:              time.Minute,
		ReaperInterval:   -1,
		Logger:           quietLogger(),
		DisableUserIndex: !sc.UserIndex,
	})
	if err != nil {
		return row, err
	}
	defer svc.Close()

	var op opFunc
	switch sc.Op {
	case OpHeartbeat:
		conns, err := joinConns(runCtx, svc, sc.Conns)
		defer leaveConns(svc, conns)
		if err != nil {
			return row, err
		}
		op = func(ctx context.Context, w int) (int, error) {
			c := &conns[w]
			_, err := svc.Heartbeat(ctx, c.room, c.id, presence.HeartbeatParams{Epoch: &c.epoch})
			if err != nil {
				return 0, err
			}
			return 1, nil
		}
	case OpJoinLeave:
		state := json.RawMessage(`{"n":0}`)
		op = func(ctx context.Context, w int) (int, error) {
			room, id := "r"+strconv.Itoa(w/UsersPerRoom), "c"+strconv.Itoa(w)
			if _, err := svc.Join(ctx, room, id, "u"+strconv.Itoa(w), state); err != nil {
				return 0, err
			}
			if err := svc.Leave(ctx, room, id); err != nil {
				return 0, err
			}
			return 2, nil
		}
	default:
		return row, fmt.Errorf("bench: unknown user index operation %q", sc.Op)
	}
	cc.Reset()
	res := runLoad(runCtx, loadSpec{workers: sc.Conns, warmup: sc.Warmup, duration: sc.Duration, maxOps: sc.MaxOps},
		probe, cc.Reset, op)
	row.Ops, row.Errors, row.DurationS = res.ops, res.errs, res.window.Seconds()
	row.OpsPerSec = rate(res.ops, res.window)
	row.P50Ms, row.P99Ms = res.hist.QuantileMs(0.50), res.hist.QuantileMs(0.99)
	row.RedisCPUPct, row.ClientCPUPct, row.OtherCPUPct = res.cpu.redis, res.cpu.self, res.cpu.other
	row.RoundTripsPerOp = ratio(cc.RoundTrips(), res.totalOps)
	row.setFirstError(res.firstError)
	return row, nil
}

// userIndexJobs are the rows of the user index table: for each round,
// backend and operation, the index off then on, so a drift of the machine
// over the run weighs on both sides alike.
func userIndexJobs(o Options, probe *Probe) []job {
	var jobs []job
	for round := range o.UserIndexRounds {
		for _, b := range o.Backends {
			for _, op := range []string{OpHeartbeat, OpJoinLeave} {
				for _, on := range []bool{false, true} {
					sc := UserIndexScenario{Backend: b, Op: op, UserIndex: on, Conns: o.UserIndexConns,
						Warmup: o.Warmup, Duration: o.Duration, MaxOps: o.MaxOps}
					jobs = append(jobs, job{fmt.Sprintf("user index %s, round %d: %s %s, %d conns", onOff(on), round+1, b, op, sc.Conns),
						func(ctx context.Context) (Row, error) { return RunUserIndex(ctx, o.Target, sc, probe) }})
				}
			}
		}
	}
	return jobs
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// WriteUserIndexTable writes, per backend and operation, the mean
// throughput over the rounds with the index off and on, and their ratio.
func WriteUserIndexTable(w io.Writer, rows []Row) {
	type key struct{ backend, op string }
	type sums struct{ off, on, nOff, nOn, rtOff, rtOn float64 }
	var order []key
	agg := map[key]*sums{}
	for _, r := range rows {
		if r.Table != TableUserIndex || r.UserIndex == nil {
			continue
		}
		k := key{r.Backend, r.Op}
		s := agg[k]
		if s == nil {
			s = &sums{}
			agg[k] = s
			order = append(order, k)
		}
		if *r.UserIndex {
			s.on, s.nOn, s.rtOn = s.on+r.OpsPerSec, s.nOn+1, s.rtOn+r.RoundTripsPerOp
		} else {
			s.off, s.nOff, s.rtOff = s.off+r.OpsPerSec, s.nOff+1, s.rtOff+r.RoundTripsPerOp
		}
	}
	fmt.Fprintln(w, "| operation | backend | index off (ops/s) | index on (ops/s) | on / off | round trips/op off → on |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---|")
	for _, k := range order {
		s := agg[k]
		if s.nOff == 0 || s.nOn == 0 {
			continue
		}
		off, on := s.off/s.nOff, s.on/s.nOn
		fmt.Fprintf(w, "| %s | %s | %s | %s | %.3f | %.2f → %.2f |\n", k.op, k.backend, num(off), num(on), on/off, s.rtOff/s.nOff, s.rtOn/s.nOn)
	}
}
