// Package metrics owns the figures every forkd process keeps for
// Prometheus: lock-free counters and histograms bumped on the hot path
// (atomics, no allocation), read only when the master is scraped; the
// per-process registry (these counters plus the Go runtime and process
// collectors); and the wire form in which a worker hands its metric families
// to the master, which labels them with `worker` and serves one view.
// It imports nothing of forkd's.
package metrics
