package bench

import (
	"math/bits"
	"time"
)

// Histogram buckets are log-linear, HDR style: values below 2^histSubBits
// nanoseconds have a bucket each; above, every power of two is cut into
// 2^histSubBits equal buckets, so a recorded value is off by at most
// 1/2^histSubBits (about 3 %) of itself. Recording is an index computation and
// an increment: no allocation, no lock (each goroutine owns its histogram and
// they are merged at the end).
const (
	histSubBits  = 5
	histSub      = 1 << histSubBits
	histMaxShift = 40 // values up to ~2^(40+6) ns (about 20 hours)
	histBuckets  = (histMaxShift + 2) * histSub
)

// histogram is a latency histogram in nanoseconds. The zero value is ready.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    uint64
}

// bucketOf returns the bucket index of v nanoseconds.
func bucketOf(v uint64) int {
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1 // v>>shift is in [histSub, 2*histSub)
	if shift > histMaxShift {
		return histBuckets - 1
	}
	return (shift+1)*histSub + int(v>>uint(shift)) - histSub
}

// bucketValue returns the midpoint of bucket i, in nanoseconds.
func bucketValue(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	shift := i/histSub - 1
	low := uint64(histSub+i%histSub) << uint(shift)
	return low + (uint64(1)<<uint(shift))/2
}

// record adds one observation.
func (h *histogram) record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucketOf(v)]++
	h.n++
	if v > h.max {
		h.max = v
	}
}

// merge adds o's observations to h.
func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// count is the number of observations.
func (h *histogram) count() uint64 { return h.n }

// percentile returns the value at quantile q (0 < q <= 1), or 0 when empty.
func (h *histogram) percentile(q float64) time.Duration {
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
			v := bucketValue(i)
			if v > h.max {
				v = h.max
			}
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}
