package reactor

import "runtime"

// yieldBeforeNextRequest runs when a keep-alive connection, its response
// just written, is about to read the next request's first bytes: the other
// goroutines ready to run go first. The client can hardly have sent the
// next request yet (it has not even read the response), so reading at once
// would nearly always fail with EAGAIN, park the goroutine, and cost an
// epoll round and a wake-up before the read that gets the request. Run
// after the others, the read finds the request already there more often:
// on the 2-core machine of docs/BENCHMARKS.md, read system calls went from
// 2.0 to 1.6-1.8 per request under `wrk -t1 -c64`, and a BASE worker served
// some 5-9% more requests per CPU-second (see "BASE HTTP per core" there).
// With nothing else to run it costs a trip through the scheduler, well
// under a microsecond.
//
// A plain TCP HTTP connection no longer yields: it waits on the runtime's
// poller before that read (waitNextRequest, idlewait_linux.go), and so
// makes no EAGAIN read at all; so does a plain TCP WebSocket before its
// next message (readRaw, wsread.go). TLS connections still yield, and so
// does a read that must read first (the last one filled its buffer).
func yieldBeforeNextRequest() { runtime.Gosched() }
