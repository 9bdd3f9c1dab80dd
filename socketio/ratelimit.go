package socketio

import (
	"time"

	"golang.org/x/time/rate"
)

// Rate is a token-bucket limit: PerSecond events on average, bursts of up
// to Burst. A zero Rate means the default of the field it is in; a
// negative PerSecond means unlimited.
type Rate struct {
	PerSecond float64
	Burst     int
}

func (r Rate) orDefault(d Rate) Rate {
	if r.PerSecond == 0 {
		return d
	}
	if r.Burst <= 0 {
		r.Burst = max(1, int(r.PerSecond))
	}
	return r
}

// bucket is one socket's limit for one class of events. It is given the
// event's arrival time rather than reading the clock, so a burst that
// arrived together is judged by when it arrived, not by when the limiter
// got to it.
type bucket struct{ *rate.Limiter }

// newBucket starts full. The start time is not needed: a limiter that
// has not been used yet counts as full whenever its first event comes.
func newBucket(r Rate, _ time.Time) *bucket {
	lim := rate.Limit(r.PerSecond)
	if r.PerSecond < 0 {
		lim = rate.Inf
	}
	return &bucket{rate.NewLimiter(lim, r.Burst)}
}

// allow takes one token, reporting whether there was one.
func (b *bucket) allow(now time.Time) bool { return b.AllowN(now, 1) }
