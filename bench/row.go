package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Tables a Row belongs to.
const (
	TableSeed      = "heartbeat_seed" // the seed's scenario: 100 conns, one heartbeat each every 5 s
	TableHeartbeat = "heartbeat"      // closed-loop saturation, and the ceiling
	TableMetadata  = "metadata"       // W writers doing get → update(majorRevision CAS)
	// TableUserIndex (users.go): heartbeat and join+leave, user index off and on.
)

// Strategy labels of rows that are not registered strategies.
const (
	StrategyAppCAS          = "app-cas"         // the seed's application-level CAS (bench only)
	StrategyCeilingPipeline = "ceiling"         // raw EVALSHA of heartbeat.lua, auto-pipelined
	StrategyCeilingMulti    = "ceiling-domulti" // raw EVALSHA of heartbeat.lua, explicit DoMulti batches
	BackendRaw              = "rueidis-raw"     // the ceiling's client: rueidis with no service on top
)

// Row is one measured configuration. The JSON field names are the
// documented output of presence-bench -json.
type Row struct {
	Table       string `json:"table"`
	Backend     string `json:"backend"`
	Strategy    string `json:"strategy"`
	Concurrency int    `json:"concurrency"`

	Ops       int64   `json:"ops"`        // operations completed in the measured window (metadata: successful updates)
	Errors    int64   `json:"errors"`     // failed operations other than metadata CAS conflicts
	DurationS float64 `json:"duration_s"` // measured window

	OpsPerSec       float64 `json:"ops_per_sec"`
	P50Ms           float64 `json:"p50_ms"`
	P99Ms           float64 `json:"p99_ms"`
	RoundTripsPerOp float64 `json:"round_trips_per_op"`
	RedisCPUPct     float64 `json:"redis_cpu_pct"`  // one core = 100
	ClientCPUPct    float64 `json:"client_cpu_pct"` // this process (service + load), one core = 100
	OtherCPUPct     float64 `json:"other_cpu_pct"`  // the rest of the machine meanwhile (disturbance)

	// Heartbeat rows.
	Pass               string   `json:"pass,omitempty"`                  // ceiling rows: measured at the "start" or the "end" of the run
	CeilingRatio       *float64 `json:"ceiling_ratio,omitempty"`         // ops_per_sec / the ceiling's
	RoundTripsPerBatch *float64 `json:"round_trips_per_batch,omitempty"` // batch strategy
	AvgBatch           *float64 `json:"avg_batch,omitempty"`             // batch strategy: heartbeats per flush

	// Metadata rows.
	SuccessRate     *float64 `json:"success_rate,omitempty"`        // successful updates / update attempts
	AvgRetries      *float64 `json:"avg_retries,omitempty"`         // conflicting attempts per successful update
	LostUpdates     *int64   `json:"lost_updates,omitempty"`        // successful updates − final counter
	Attempts        *int64   `json:"attempts,omitempty"`            // update attempts (get → update)
	TxRetriesPerOp  *float64 `json:"tx_retries_per_op,omitempty"`   // watch: EXEC aborts retried inside the strategy, per attempt
	Retry           string   `json:"retry,omitempty"`               // the writers' policy after a conflict: backoff | immediate
	RedisCPUUsPerOp *float64 `json:"redis_cpu_us_per_op,omitempty"` // Redis CPU time per successful update, µs
	RedisDelayUs    float64  `json:"redis_delay_us,omitempty"`      // one-way delay the bench's DelayProxy added each way (-redis-delay), µs

	// User index rows: the index on (the row's own figures) against off,
	// measured in interleaved slices (users.go).
	Op                 string    `json:"op,omitempty"`                     // OpHeartbeat or OpJoinLeave
	OffOpsPerSec       *float64  `json:"off_ops_per_sec,omitempty"`        // the same load with the index off
	OffRoundTripsPerOp *float64  `json:"off_round_trips_per_op,omitempty"` // likewise
	OnOffRatio         *float64  `json:"on_off_ratio,omitempty"`           // ops_per_sec / off_ops_per_sec
	BlockRatios        []float64 `json:"block_ratios,omitempty"`           // the ratio of each block of slices, for the spread

	FirstError string `json:"first_error,omitempty"` // the first of Errors, for the log
}

func (r *Row) setFirstError(err error) {
	if err != nil && r.Errors > 0 {
		r.FirstError = err.Error()
	}
}

func ptr[T any](v T) *T { return &v }

// WriteJSON writes one JSON object per row, one per line.
func WriteJSON(w io.Writer, rows []Row) error {
	enc := json.NewEncoder(w)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

func ms(v float64) string {
	switch {
	case v == 0:
		return "–"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func pct(v float64) string { return fmt.Sprintf("%.0f%%", v) }

func num(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	// thousands separators, as the seed's tables are read by people
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func rt(v float64) string { return fmt.Sprintf("%.2f", v) }

// WriteSeedTable writes the seed's heartbeat table for the seed scenario.
func WriteSeedTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| backend | strategy | throughput (req/s) | P50 (ms) | P99 (ms) | Redis CPU | bench CPU | round trips/op | errors |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range rows {
		if r.Table != TableSeed {
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", r.Backend, r.Strategy, fmt.Sprintf("%.1f", r.OpsPerSec),
			ms(r.P50Ms), ms(r.P99Ms), fmt.Sprintf("%.1f%%", r.RedisCPUPct), fmt.Sprintf("%.1f%%", r.ClientCPUPct), rt(r.RoundTripsPerOp), r.Errors)
	}
}

// WriteHeartbeatTable writes the saturation rows, the ceiling first, with
// each row's ratio to the ceiling.
func WriteHeartbeatTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| backend | strategy | connections | throughput (ops/s) | P50 (ms) | P99 (ms) | Redis CPU | bench CPU | round trips/op | of ceiling |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range rows {
		if r.Table != TableHeartbeat {
			continue
		}
		strat := r.Strategy
		rts := rt(r.RoundTripsPerOp)
		if r.RoundTripsPerBatch != nil && r.AvgBatch != nil {
			rts = fmt.Sprintf("%s (%s per batch of %.0f)", rts, rt(*r.RoundTripsPerBatch), *r.AvgBatch)
		}
		ratio := "–"
		if r.CeilingRatio != nil {
			ratio = fmt.Sprintf("%.0f%%", 100**r.CeilingRatio)
		}
		if r.Backend == BackendRaw {
			strat = "**" + strat + "**"
			if r.Pass == "end" {
				strat += " (again, at the end)"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", r.Backend, strat, r.Concurrency, num(r.OpsPerSec),
			ms(r.P50Ms), ms(r.P99Ms), pct(r.RedisCPUPct), pct(r.ClientCPUPct), rts, ratio)
	}
}

// WriteMetadataTable writes the seed's metadata table with what it hid.
func WriteMetadataTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| backend | strategy | writer retry | added delay (µs, each way) | writers | success rate | avg retries | P50 (ms) | P99 (ms) | successful updates/s | lost updates | round trips/update | Redis CPU | Redis CPU µs/update | errors |")
	fmt.Fprintln(w, "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range rows {
		if r.Table != TableMetadata {
			continue
		}
		var sr, ar float64
		var lost int64
		if r.SuccessRate != nil {
			sr = *r.SuccessRate
		}
		if r.AvgRetries != nil {
			ar = *r.AvgRetries
		}
		if r.LostUpdates != nil {
			lost = *r.LostUpdates
		}
		lostS := fmt.Sprintf("%d", lost)
		if lost != 0 {
			lostS = fmt.Sprintf("**%d** (%.1f%%)", lost, 100*float64(lost)/float64(max(r.Ops, 1)))
		}
		cpuOp, retry := "–", r.Retry
		if r.RedisCPUUsPerOp != nil {
			cpuOp = fmt.Sprintf("%.0f", *r.RedisCPUUsPerOp)
		}
		if retry == "" {
			retry = "–"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %.0f | %d | %.1f%% | %.2f | %s | %s | %s | %s | %s | %s | %s | %d |\n", r.Backend, r.Strategy, retry, r.RedisDelayUs, r.Concurrency,
			100*sr, ar, ms(r.P50Ms), ms(r.P99Ms), num(r.OpsPerSec), lostS, rt(r.RoundTripsPerOp), pct(r.RedisCPUPct), cpuOp, r.Errors)
	}
}
