// Package bench is the load generator and report behind `server bench`.
//
// It owns everything between "start the server in a mode" and "print the
// table": spawning the server binary (or the plain fasthttp baseline, see
// Baseline) on port 0 of loopback (reading the ports they were bound to),
// the lean HTTP and WebSocket clients that
// drive load, the scenarios (http, echo, push, broadcast, connect, idle), the
// /proc readers that measure the server's CPU and RSS, and the table, JSON,
// markdown and chart outputs.
//
// The load generator is written to cost as little CPU as possible, because on
// a small machine it shares the cores with the server: requests and frames are
// pre-encoded, responses are parsed just enough (status line, Content-Length,
// frame header), and latencies go into a fixed log-linear histogram that does
// not allocate. The figure that compares servers fairly is therefore work per
// server CPU-second, not raw throughput.
//
// A program gets the `bench` command by importing this package (init
// registers it with the CLI, internal/command); the built-in application
// does. One that does not links neither this package nor its charting
// library (gonum/plot).
//
// Threading: Run and Baseline block; every goroutine they start has ended and
// every process they spawned has been killed (by pid or process group) when
// they return.
package bench
