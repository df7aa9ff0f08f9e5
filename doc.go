// Package forkd is a multi-process prefork server for Go in the manner of
// Swoole and Workerman: declare listeners and callbacks in a Server, hand
// over to Run, and get the whole command line (start, stop, reload,
// restart, status, connections) for free; import _
// "github.com/forkd/forkd/bench" for `bench` as well (it links a load
// generator and a charting library, so a program does not by default).
//
// Two modes, one program. In PROCESS mode (the default) the master holds
// every client connection in reactor goroutines and forwards complete
// requests and WebSocket messages to worker processes over pipes; a
// worker that crashes costs no connection, and its replacement is told
// which connections it now serves (OnResume). In BASE mode each worker
// accepts on its own SO_REUSEPORT socket and owns its connections, with no
// hop through the master. Your handlers are the same in both.
//
// Every process runs your program's main: the master re-executes its own
// binary as each worker (Go cannot fork). So code before Run runs in every
// process, master included. Open databases, caches and the like in
// OnWorkerStart, not before Run (Workerman's advice, for the same reason:
// a resource opened in the master would be shared by accident).
//
// Each worker process runs with GOMAXPROCS set to its share of the CPUs
// (CPUs / workers, at least 1: with the default worker count, 1, as in
// fasthttp's prefork) unless the GOMAXPROCS environment variable is set.
//
// Connection ids (ConnID) encode the process that holds the connection, so
// any worker can push to any connection in one unicast and learn the real
// outcome: nil, ErrNoConnection, ErrClosed, ErrBufferFull or ErrTimeout.
// They always fit in 53 bits, so PHP, SQL BIGINT and JavaScript hold them
// as numbers.
//
// A connection that a PROCESS-mode worker takes over from another (a reload,
// a crash) is not new: OnResume runs if set, OnOpen never runs again.
package forkd
