package bench

import (
	"math/bits"
	"time"
)

// histBuckets covers 0 µs to beyond 10^9 µs (about 17 minutes) at ~3%
// relative precision: values below 64 µs get a bucket each, larger ones
// 32 buckets per power of two.
const histBuckets = 64 + 32*40

// Hist is a log-linear latency histogram in microseconds. It is not safe
// for concurrent use: each worker records into its own and the results are
// merged, so recording costs no synchronisation.
type Hist struct {
	counts [histBuckets]uint64
	n      uint64
	max    int64
}

func histIndex(us int64) int {
	if us < 64 {
		if us < 0 {
			return 0
		}
		return int(us)
	}
	e := bits.Len64(uint64(us)) - 6 // us>>e is in [32, 63]
	i := 64 + (e-1)*32 + int(us>>e) - 32
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// histValue is the middle of bucket i, in µs.
func histValue(i int) float64 {
	if i < 64 {
		return float64(i) + 0.5
	}
	e := (i-64)/32 + 1
	lo := int64((i-64)%32+32) << e
	return float64(lo) + float64(int64(1)<<e)/2
}

// Record adds one latency.
func (h *Hist) Record(d time.Duration) {
	us := d.Microseconds()
	h.counts[histIndex(us)]++
	h.n++
	if us > h.max {
		h.max = us
	}
}

// Merge adds o's samples to h.
func (h *Hist) Merge(o *Hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// Count is the number of samples.
func (h *Hist) Count() uint64 { return h.n }

// QuantileMs returns the q-quantile (0 < q ≤ 1) in milliseconds, 0 without
// samples.
func (h *Hist) QuantileMs(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := histValue(i)
			if m := float64(h.max); v > m {
				v = m
			}
			return v / 1000
		}
	}
	return float64(h.max) / 1000
}
