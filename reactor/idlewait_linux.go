package reactor

import (
	"io"
	"net"
	"reflect"
	"syscall"
	"unsafe"
)

// Waiting for a keep-alive connection's next request without the read
// that fails.
//
// After writing a response, fasthttp reads the next request at once. The
// client has rarely sent it by then, so the read fails with EAGAIN, the
// goroutine parks in the runtime's poller and, woken, reads again: about
// 0.7-0.8 wasted read system calls per request even after the yield of
// yieldBeforeNextRequest (docs/BENCHMARKS.md, "BASE HTTP per core"). An
// event loop does not make that read: the poller says when there is
// something to read.
//
// The runtime's poller remembers an edge it saw while nobody waited (the
// descriptor is "ready"), and forgets it at the start of each read. So
// waiting on the descriptor's poll state before the read, without
// resetting it, is exact: either data arrived since the last read began
// (the wait returns at once: the edge was seen, or arrives later and
// wakes it), or nothing did and the goroutine parks until it does, the
// connection closes, or a deadline passes (the sweeper's timeouts and
// shutIdle set one). An edge for bytes the last read already consumed
// only makes the read fail as before; nothing can be missed.
//
// The standard library has no call for "wait until readable" on a
// net.Conn (syscall.RawConn.Read resets the state before its first
// callback, so it would miss an edge seen before it and hang), so the
// runtime's own wait is called, through RawConn.Control, which holds a
// reference on the descriptor: it cannot be destroyed, nor its poll state
// reused by another connection, while the goroutine waits on it (a close
// wakes the wait). The poll state is found from the *net.TCPConn by the
// field offsets reflect reports for this Go version; when any of them is
// not where it is expected (another runtime), connections fall back to
// the yield.
//
// Once the wait says the socket is readable, the request's bytes are read
// there too, with one read system call under the same reference, skipping
// the netFD/poll.FD layers' lock, readiness reset and scheduler hand-off
// that cost a plain Read a few hundred nanoseconds: the socket is known to
// have data, so the read cannot block. Anything else (a closed or timed-out
// wait, EAGAIN on a stale edge, an error) falls back to the connection's
// own Read, which reports it as it always did.

//go:linkname runtime_pollWait internal/poll.runtime_pollWait
func runtime_pollWait(ctx uintptr, mode int) int

// pollCtxAt is where a *net.TCPConn's poll state pointer is, as two hops:
// the *netFD field's offset in the TCPConn, and the runtime context's
// offset in the netFD (0: unknown, wait with the yield).
var pollFDOff, pollCtxOff = pollOffsets()

func pollOffsets() (fdOff, ctxOff uintptr) {
	tc := reflect.TypeFor[net.TCPConn]()
	conn, ok := tc.FieldByName("conn")
	if !ok || conn.Type.Kind() != reflect.Struct {
		return 0, 0
	}
	fd, ok := conn.Type.FieldByName("fd")
	if !ok || fd.Type.Kind() != reflect.Pointer || fd.Type.Elem().Kind() != reflect.Struct {
		return 0, 0
	}
	pfd, ok := fd.Type.Elem().FieldByName("pfd")
	if !ok || pfd.Type.Kind() != reflect.Struct || pfd.Type.String() != "poll.FD" {
		return 0, 0
	}
	pd, ok := pfd.Type.FieldByName("pd")
	if !ok || pd.Type.Kind() != reflect.Struct || pd.Type.String() != "poll.pollDesc" {
		return 0, 0
	}
	rc, ok := pd.Type.FieldByName("runtimeCtx")
	if !ok || rc.Type.Kind() != reflect.Uintptr || pd.Type.NumField() != 1 {
		return 0, 0
	}
	return conn.Offset + fd.Offset, pfd.Offset + pd.Offset + rc.Offset
}

// idleWait waits for one plain TCP connection to become readable.
type idleWait struct {
	raw  syscall.RawConn
	nfd  unsafe.Pointer // the *net.netFD
	wait func(uintptr)  // made once: Control's callback
	buf  []byte         // wait's read buffer, and what it read (-1: nothing)
	n    int
}

// noIdleWait marks a connection that waits with the yield (TLS, or an
// unknown runtime layout).
var noIdleWait = &idleWait{}

// tcpNetFD returns tc's *net.netFD, nil when the runtime's layout is not
// the expected one.
func tcpNetFD(tc *net.TCPConn) unsafe.Pointer {
	if pollCtxOff == 0 {
		return nil
	}
	return *(*unsafe.Pointer)(unsafe.Add(unsafe.Pointer(tc), pollFDOff))
}

// waitReadable parks until the descriptor of nfd is readable, without
// resetting its readiness (see above), and reports whether it is: false
// when it was closed, its read deadline passed, or it is not in the
// poller. It must run inside the descriptor's RawConn.Control, by the
// only goroutine that may read it then: the runtime throws ("double
// wait") if another one waits to read it meanwhile, which poll.FD's read
// lock, not taken here, would otherwise prevent.
func waitReadable(nfd unsafe.Pointer) bool {
	// Under Control's reference the poll state stays this descriptor's;
	// 0 once closed.
	ctx := *(*uintptr)(unsafe.Add(nfd, pollCtxOff))
	return ctx != 0 && runtime_pollWait(ctx, 'r') == 0
}

// newIdleWait returns the waiter for nc, or nil when nc is not a plain
// *net.TCPConn or the runtime's layout is not the expected one.
func newIdleWait(nc net.Conn) *idleWait {
	tc, ok := nc.(*net.TCPConn)
	if !ok || pollCtxOff == 0 {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &idleWait{raw: raw, nfd: tcpNetFD(tc)}
	if w.nfd == nil {
		return nil
	}
	w.wait = func(fd uintptr) {
		w.n = -1
		if !waitReadable(w.nfd) || len(w.buf) == 0 {
			return
		}
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&w.buf[0])), uintptr(len(w.buf)))
		if e == 0 {
			w.n = int(n)
		}
	}
	return w
}

// waitNextRequest runs instead of the read that starts a keep-alive
// connection's next request, into b: done when it read (n > 0, or 0 and
// io.EOF at the client's close); not done when the caller must read as
// usual (the connection is closed, its deadline passed, the edge was stale,
// the last read filled its buffer, or it is a TLS connection, which only
// yields first).
//
// The wait is exact only if the socket held nothing more after the last
// read: bytes that were already there when it began raise no new edge. A
// read that filled its buffer may have left some (pipelined requests that
// end exactly at the end of fasthttp's 16 KiB buffer, say), and the
// connection would sleep with them unread until its idle timeout: after
// such a read, the next one reads first (readFull).
func (c *Conn) waitNextRequest(b []byte) (int, bool, error) {
	if c.readFull {
		yieldBeforeNextRequest()
		return 0, false, nil
	}
	w := c.idle
	if w == nil {
		// Made at the first wait, not at accept: a connection that only
		// upgrades, or is closed after one request, never needs it.
		if w = newIdleWait(c.Conn); w == nil {
			w = noIdleWait
		}
		c.idle = w
	}
	if w != noIdleWait {
		w.buf = b
		err := w.raw.Control(w.wait)
		w.buf = nil
		if err == nil && w.n > 0 {
			return w.n, true, nil
		}
		if err == nil && w.n == 0 {
			return 0, true, io.EOF
		}
		return 0, false, nil
	}
	yieldBeforeNextRequest()
	return 0, false, nil
}
