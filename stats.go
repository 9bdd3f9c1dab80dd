package presence

import (
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence/strategy"
)

// Heartbeat outcomes, as counted in Stats and passed to Hooks.Heartbeat.
const (
	OutcomeOK       = "ok"      // applied, state unchanged
	OutcomeChanged  = "changed" // applied, state changed
	OutcomeStale    = "stale"
	OutcomeNotFound = "not_found"
	OutcomeError    = "error" // invalid input, backend failure, closed
)

// Hooks observe a Service (the server feeds Prometheus from them). Nil
// funcs are skipped; they must be fast and safe for concurrent use.
type Hooks struct {
	strategy.Hooks
	// Heartbeat is called once per Heartbeat call with its outcome.
	Heartbeat func(outcome string, took time.Duration)
	// Reaped is called with the number of conns one reaper pass removed.
	Reaped func(n int)
}

// Stats is a snapshot of the service's counters since it started.
type Stats struct {
	HeartbeatStrategy string
	MetadataStrategy  string

	HeartbeatsOK       uint64
	HeartbeatsChanged  uint64
	HeartbeatsStale    uint64
	HeartbeatsNotFound uint64
	HeartbeatsError    uint64

	// BatchBuffer is the batcher's buffered heartbeats (0 for other
	// strategies); BatchFlushes counts batches sent and BatchedHeartbeats
	// the heartbeats in them.
	BatchBuffer       int
	BatchFlushes      uint64
	BatchedHeartbeats uint64

	// ScriptReloads counts script calls resent with EVAL after NOSCRIPT.
	ScriptReloads uint64
	// Reaped counts conns the reaper of this node removed.
	Reaped uint64

	MetadataAttempts  uint64
	MetadataRetries   uint64
	MetadataConflicts uint64
}

type counters struct {
	hb                                       [numOutcomes]atomic.Uint64
	flushes, batched                         atomic.Uint64
	reaped                                   atomic.Uint64
	metaAttempts, metaRetries, metaConflicts atomic.Uint64
}

// outcome indexes counters.hb and names its Outcome* string.
type outcome uint8

const (
	outcomeOK outcome = iota
	outcomeChanged
	outcomeStale
	outcomeNotFound
	outcomeError
	numOutcomes
)

var outcomeNames = [numOutcomes]string{
	outcomeOK:       OutcomeOK,
	outcomeChanged:  OutcomeChanged,
	outcomeStale:    OutcomeStale,
	outcomeNotFound: OutcomeNotFound,
	outcomeError:    OutcomeError,
}

// strategyHooks chains the service's counters in front of the user's hooks.
func (c *counters) strategyHooks(user strategy.Hooks) strategy.Hooks {
	return strategy.Hooks{
		BatchFlushed: func(n int) {
			c.flushes.Add(1)
			c.batched.Add(uint64(n))
			if user.BatchFlushed != nil {
				user.BatchFlushed(n)
			}
		},
		MetadataAttempt: func() {
			c.metaAttempts.Add(1)
			if user.MetadataAttempt != nil {
				user.MetadataAttempt()
			}
		},
		MetadataRetry: func(attempt, max int) {
			c.metaRetries.Add(1)
			if user.MetadataRetry != nil {
				user.MetadataRetry(attempt, max)
			}
		},
		MetadataConflict: func() {
			c.metaConflicts.Add(1)
			if user.MetadataConflict != nil {
				user.MetadataConflict()
			}
		},
	}
}

// Stats returns the current counters.
func (s *Service) Stats() Stats {
	st := Stats{
		HeartbeatStrategy:  s.cfg.Heartbeat,
		MetadataStrategy:   s.cfg.Metadata,
		HeartbeatsOK:       s.ctr.hb[outcomeOK].Load(),
		HeartbeatsChanged:  s.ctr.hb[outcomeChanged].Load(),
		HeartbeatsStale:    s.ctr.hb[outcomeStale].Load(),
		HeartbeatsNotFound: s.ctr.hb[outcomeNotFound].Load(),
		HeartbeatsError:    s.ctr.hb[outcomeError].Load(),
		BatchFlushes:       s.ctr.flushes.Load(),
		BatchedHeartbeats:  s.ctr.batched.Load(),
		ScriptReloads:      s.scripts.Reloads(),
		Reaped:             s.ctr.reaped.Load(),
		MetadataAttempts:   s.ctr.metaAttempts.Load(),
		MetadataRetries:    s.ctr.metaRetries.Load(),
		MetadataConflicts:  s.ctr.metaConflicts.Load(),
	}
	if b, ok := s.hb.(strategy.BufferSizer); ok {
		st.BatchBuffer = b.BufferSize()
	}
	return st
}
