package core

import (
	"math/rand/v2"
	"time"
)

// ConflictBackoff is the pause before retry n (1-based) of a
// compare-and-set that lost to a concurrent write: a random 1–5 ms
// times n, capped at n = 8. Under contention on one record every loser
// learns of its loss at about the same moment; retrying at once puts them
// all in the next round again, where again only one can win. Pausing the
// losers (not the winner, which holds the current record) lets the
// winner's next write and the sleepers' retries stop colliding. The watch
// strategy pauses this long after an aborted EXEC; presence.ConflictBackoff
// offers the same pause to application CAS loops.
func ConflictBackoff(n int) time.Duration {
	n = min(max(n, 1), 8)
	return time.Duration(n) * (time.Millisecond + rand.N(4*time.Millisecond))
}
