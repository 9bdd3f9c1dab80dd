package core

import (
	"testing"
	"time"
)

// The pause grows with the conflicts in a row, is jittered (writers that
// lost together do not wake together) and is capped, so a writer that
// keeps losing is never parked for seconds.
func TestConflictBackoff(t *testing.T) {
	for _, c := range []struct {
		n        int
		min, max time.Duration
	}{{0, time.Millisecond, 5 * time.Millisecond}, {1, time.Millisecond, 5 * time.Millisecond}, {3, 3 * time.Millisecond, 15 * time.Millisecond}, {1000, 8 * time.Millisecond, 40 * time.Millisecond}} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := ConflictBackoff(c.n)
			if d < c.min || d >= c.max {
				t.Fatalf("ConflictBackoff(%d) = %v, want in [%v, %v)", c.n, d, c.min, c.max)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("ConflictBackoff(%d): %d distinct pauses in 200, not jittered", c.n, len(seen))
		}
	}
}
