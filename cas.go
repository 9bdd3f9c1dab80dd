package presence

import (
	"time"

	"github.com/realtime-message/presence/core"
)

// ConflictBackoff is how long a compare-and-set loop should pause before
// its retry n (1-based, counting consecutive conflicts; reset it after a
// success): a random 1–5 ms times n, capped at n = 8 — the pause the watch
// strategy takes after an aborted EXEC.
//
// Retrying at once against ConflictError.Current is right when conflicts
// are rare. Under contention on one channel it is not: every writer that
// lost learns the new record from the same round and retries in the next
// one together, where again only one can win, so each round commits one
// update and costs Redis a script run per writer. Pausing only the
// writers that lost lets the winner, which already holds the current
// record, commit again while they sleep (bench/RESULTS.md, metadata).
func ConflictBackoff(n int) time.Duration { return core.ConflictBackoff(n) }
