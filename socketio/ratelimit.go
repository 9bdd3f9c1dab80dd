package socketio

import (
	"sync"
	"time"
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

// bucket is one socket's token bucket for one class of events.
type bucket struct {
	mu     sync.Mutex
	rate   Rate
	tokens float64
	last   time.Time
}

func newBucket(r Rate, now time.Time) *bucket {
	return &bucket{rate: r, tokens: float64(r.Burst), last: now}
}

// allow takes one token, reporting whether there was one.
func (b *bucket) allow(now time.Time) bool {
	if b.rate.PerSecond < 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(b.rate.Burst), b.tokens+el.Seconds()*b.rate.PerSecond)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
