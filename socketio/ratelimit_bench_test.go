package socketio

import (
	"sync"
	"testing"
	"time"
)

// handBucket is the hand-written token bucket the per-socket limits used
// before golang.org/x/time/rate, kept so that BenchmarkRateLimit can still
// compare the two in one run.
type handBucket struct {
	mu     sync.Mutex
	rate   Rate
	tokens float64
	last   time.Time
}

func (b *handBucket) allow(now time.Time) bool {
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

// BenchmarkRateLimit compares, in one run, the per-socket limiter on the
// event hot path (rate.Limiter.AllowN) with the hand-written bucket it
// replaced, both given the event's arrival time as the binding does.
// "admit" never runs out of tokens; "refuse" is a flood, nearly every call
// refused.
func BenchmarkRateLimit(b *testing.B) {
	start := time.Now()
	cases := []struct {
		name string
		r    Rate
	}{
		{"admit", Rate{PerSecond: 1e9, Burst: 1 << 30}},
		{"refuse", Rate{PerSecond: 100, Burst: 200}},
	}
	for _, c := range cases {
		b.Run("hand-written/"+c.name, func(b *testing.B) {
			bk := &handBucket{rate: c.r, tokens: float64(c.r.Burst), last: start}
			now := start
			for b.Loop() {
				now = now.Add(time.Microsecond)
				bk.allow(now)
			}
		})
		b.Run("x-time-rate/"+c.name, func(b *testing.B) {
			bk := newBucket(c.r, start)
			now := start
			for b.Loop() {
				now = now.Add(time.Microsecond)
				bk.allow(now)
			}
		})
	}
}

// TestBucket pins the behaviour the binding relies on: a new bucket is
// full, refills at its rate, and a negative rate never refuses.
func TestBucket(t *testing.T) {
	t0 := time.Now()
	b := newBucket(Rate{PerSecond: 2, Burst: 3}, t0)
	for i := range 3 {
		if !b.allow(t0) {
			t.Fatalf("call %d of the burst refused", i)
		}
	}
	if b.allow(t0) {
		t.Fatal("admitted past the burst")
	}
	if !b.allow(t0.Add(500*time.Millisecond)) || b.allow(t0.Add(500*time.Millisecond)) {
		t.Fatal("half a second at 2/s should give back exactly one token")
	}
	u := newBucket(Rate{PerSecond: -1}.orDefault(Rate{PerSecond: 1, Burst: 1}), t0)
	for range 1000 {
		if !u.allow(t0) {
			t.Fatal("unlimited bucket refused")
		}
	}
}
