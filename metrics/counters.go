package metrics

import (
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds, in seconds, of the request and
// message latency histograms (classic buckets: every Prometheus and Grafana
// reads them).
var LatencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// bucketNanos are LatencyBuckets in nanoseconds, for a comparison of
// integers on the hot path.
var bucketNanos = func() [16]int64 {
	var b [16]int64
	for i, s := range LatencyBuckets {
		b[i] = int64(s * 1e9)
	}
	return b
}()

// Histogram is a classic histogram kept with atomics: one add for the
// bucket, one for the sum. Counts are per bucket (not cumulative) and the
// last slot is +Inf; Snapshot makes them cumulative on scrape.
type Histogram struct {
	counts [17]atomic.Uint64
	sumNs  atomic.Int64
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	ns := int64(d)
	i := 0
	for i < len(bucketNanos) && ns > bucketNanos[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(ns)
}

// Snapshot returns the cumulative bucket counts (by LatencyBuckets), the
// total count and the sum in seconds.
func (h *Histogram) Snapshot() (cum []uint64, count uint64, sum float64) {
	cum = make([]uint64, len(LatencyBuckets))
	var n uint64
	for i := range LatencyBuckets {
		n += h.counts[i].Load()
		cum[i] = n
	}
	n += h.counts[len(LatencyBuckets)].Load()
	return cum, n, float64(h.sumNs.Load()) / 1e9
}

// Outcomes of a push, as the ipc Outcome numbers them (0..7).
var OutcomeNames = [8]string{"ok", "no_connection", "closed", "buffer_full", "timeout", "too_large", "unavailable", "failed"}

// Proc is one process's counters. Every field is safe for concurrent use
// without a lock; the zero value is ready.
type Proc struct {
	// Connections (kept by the reactor of the process holding them: the
	// master in PROCESS mode, each worker in BASE mode).
	ConnsAccepted atomic.Uint64
	ConnsOpen     atomic.Int64
	// HTTP responses by status class (index 1..5 = 1xx..5xx, 0 = other)
	// and their latency, from the request's first byte to the handler's
	// return, measured where the client is answered.
	HTTP        [6]atomic.Uint64
	HTTPLatency Histogram
	// WebSocket traffic on the sockets this process holds.
	WSMessagesIn  atomic.Uint64
	WSMessagesOut atomic.Uint64
	WSBytesIn     atomic.Uint64
	WSBytesOut    atomic.Uint64
	// Send buffers that filled (OnBufferFull fired).
	BufferFull atomic.Uint64
	// Kept by workers: how long OnMessage took (its count: messages handled).
	MessageLatency Histogram
	// Kept by the process that pushes or broadcasts (the caller).
	Pushes     [8]atomic.Uint64 // by ipc Outcome
	Broadcasts atomic.Uint64
	PipeSent   atomic.Uint64
	PipeRecv   atomic.Uint64
	TasksDone  atomic.Uint64
	TasksFail  atomic.Uint64
}

// Push counts a push's outcome (an ipc Outcome number).
func (p *Proc) Push(outcome uint16) {
	if int(outcome) < len(p.Pushes) {
		p.Pushes[outcome].Add(1)
	}
}

// HTTPDone counts one answered request: its status and latency.
func (p *Proc) HTTPDone(status int, d time.Duration) {
	c := status / 100
	if c < 1 || c > 5 {
		c = 0
	}
	p.HTTP[c].Add(1)
	p.HTTPLatency.Observe(d)
}
