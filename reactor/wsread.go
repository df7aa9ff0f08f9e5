package reactor

import (
	"bufio"
	"io"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// Reading a WebSocket without holding a buffer while it is idle.
//
// An idle WebSocket spends its life waiting for the peer. A read through
// net.Conn needs its buffer before it waits, so every idle connection
// would pin one (4 KiB). A plain TCP connection is read through its
// syscall.RawConn instead: the callback takes a pooled buffer, reads, and
// when the socket has nothing (EAGAIN) and no partial frame is held, puts
// the buffer back before returning false, which parks the goroutine in
// the poller until the socket is readable (the syscalls of
// net.Conn.Read: a read, EAGAIN, wait, a read; most reads now wait first
// and make no EAGAIN read, see below); the buffer is pooled across
// connections, so 10,000 idle ones share a handful.
//
// TLS connections keep reading through their net.Conn (crypto/tls holds
// its own buffers) with a buffer held for the connection's life.
//
// Waiting for the next message without the read that fails.
//
// When everything read is handled (for an echo: answered), the peer has
// rarely sent its next message yet, and the read above fails with EAGAIN
// before parking: about 0.9 wasted read system calls per message under an
// echo load. As for a keep-alive HTTP connection (idlewait_linux.go), a
// plain TCP WebSocket instead waits on the runtime's poller first, then
// reads with one raw read(2) (waitRead): no EAGAIN read, no poll.FD read
// lock or readiness reset, no buffer held while it waits. The wait is
// exact only if the socket held nothing more after the last read (bytes
// already there raise no new edge), so it is used only after a read that
// left room in its buffer (emptied); after one that filled it, the next
// read reads first, as before. An EAGAIN after the wait (an edge for bytes
// the last read already took), a closed or timed-out wait, or an empty
// buffer pool go the read-first way too, which reports errors as before.
//
// The wait parks without poll.FD's read lock, and the runtime throws if a
// second goroutine waits to read the same socket meanwhile. The read loop
// is the only reader of a WebSocket's socket (finish's drain runs in it,
// after the loop; fasthttp lets go of a hijacked connection; the sweeper,
// heartbeat, Drain and Close only set deadlines, shut or close, which
// wake the wait). To keep it so by construction, Conn.rstate excludes the
// wait from every read through Conn.Read: the wait starts only when no
// such read is under way, and such a read that finds the loop waiting
// wakes it with a past read deadline and waits until it has left (see
// Conn.enterRead). Close cannot free the descriptor under the wait:
// RawConn.Control holds a reference on it until the wait returns.

// attach sets fr up to read c after its upgrade: hjc is the connection
// fasthttp hands to the hijack handler, whose reader may still hold bytes
// the client sent right after the upgrade request.
func (fr *frameReader) attach(c *Conn, hjc io.Reader) {
	fr.c = c
	fr.src = c // reads count bytes (Conn.Read)
	br, pool, ok := hijackedReader(hjc)
	switch {
	case !ok:
		fr.src = hjc // an unknown wrapper: read through it, buffer held
		return
	case br != nil && br.Buffered() > 0:
		fr.br = br // dropped once drained
	case br != nil && pool != nil:
		br.Reset(nil)
		pool.Put(br) // fasthttp's 16 KiB request reader, for the next connection
	}
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		fr.useRaw(tc)
		// fasthttp's last read of the socket left room in its buffer (and
		// nothing past the upgrade request): whatever the client sent
		// since raised an edge, so the first read may wait too.
		fr.emptied = fr.br == nil && !c.readFull
	}
}

// useRaw reads c's plain TCP socket tc raw from now on, waiting on the
// poller when the runtime's layout is the expected one.
func (fr *frameReader) useRaw(tc *net.TCPConn) {
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	fr.raw = raw
	fr.readFn = fr.rawRead
	fr.c.rawc = raw
	if tcpNetFD(tc) != nil {
		fr.waitFn = fr.waitRead
	}
}

// hijackedReader returns the reader of fasthttp's hijacked connection:
// nil when it reads the connection directly, fasthttp's bufio.Reader when
// it kept the one of the request (which may hold bytes past it), and the
// pool of the server's request readers. ok is false for a reader of
// another kind. fasthttp (pinned) has no accessor: the fields are found
// by reflection, once, and a test pins them.
func hijackedReader(hjc io.Reader) (br *bufio.Reader, pool *sync.Pool, ok bool) {
	t := reflect.TypeOf(hjc)
	l := hjcCache.Load()
	if l == nil || l.typ != t {
		if l = layoutOf(t); l == nil {
			return nil, nil, false
		}
		hjcCache.Store(l)
	}
	base := reflect.ValueOf(hjc).UnsafePointer()
	if s := *(**fasthttp.Server)(unsafe.Add(base, l.sOff)); s != nil && readerPoolOK {
		pool = (*sync.Pool)(unsafe.Add(unsafe.Pointer(s), readerPoolOff))
	}
	switch r := (*(*io.Reader)(unsafe.Add(base, l.rOff))).(type) {
	case *bufio.Reader:
		return r, pool, true
	case *Conn:
		return nil, pool, true
	}
	return nil, nil, false
}

// hjcLayout is where fasthttp's hijacked connection keeps its reader (r)
// and its server (s).
type hjcLayout struct {
	typ        reflect.Type
	rOff, sOff uintptr
}

var hjcCache atomic.Pointer[hjcLayout]

func layoutOf(t reflect.Type) *hjcLayout {
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	r, okr := t.Elem().FieldByName("r")
	s, oks := t.Elem().FieldByName("s")
	if !okr || !oks || r.Type != reflect.TypeFor[io.Reader]() || s.Type != reflect.TypeFor[*fasthttp.Server]() {
		return nil
	}
	return &hjcLayout{typ: t, rOff: r.Offset, sOff: s.Offset}
}

// readerPoolOff is where fasthttp.Server keeps its pool of request readers:
// a reader the upgrade leaves empty goes back to it (fasthttp itself never
// takes back a hijacked connection's reader), instead of a fresh 16 KiB
// reader being allocated, and collected, per connection.
var readerPoolOff, readerPoolOK = func() (uintptr, bool) {
	f, ok := reflect.TypeFor[fasthttp.Server]().FieldByName("readerPool")
	if !ok || f.Type != reflect.TypeFor[sync.Pool]() {
		return 0, false
	}
	return f.Offset, true
}()

// rawBufPool holds the raw reads' buffers (frameReadBufferBytes); no New:
// rawRead must not allocate.
var rawBufPool sync.Pool

// rawReady reports whether the next read goes to the raw connection:
// there is one and fasthttp's leftovers are consumed.
func (fr *frameReader) rawReady() bool {
	if fr.raw == nil {
		return false
	}
	if fr.br != nil {
		if fr.br.Buffered() > 0 {
			return false
		}
		fr.br = nil
	}
	return true
}

// read reads into p (a buffer the caller holds): fasthttp's leftovers
// first, then the connection.
func (fr *frameReader) read(p []byte) (int, error) {
	if fr.br != nil {
		if fr.br.Buffered() > 0 {
			return fr.br.Read(p)
		}
		fr.br = nil
	}
	return fr.src.Read(p)
}

// waitsFirst reports whether the next read waits on the poller first.
func (fr *frameReader) waitsFirst() bool { return fr.waitFn != nil && fr.emptied }

// What waitRead did.
const (
	waitNone  = iota // not readable (closed, a deadline), or a stale edge: read first
	waitDone         // read: rn bytes, or rerr
	waitNoBuf        // readable, and the pool was empty: take a buffer, read first
)

// readRaw reads into buf[w:], taking the buffer only once the socket is
// readable: after a wait on the poller (waitRead) when the last read
// emptied the socket, else with a read first (rawRead).
func (fr *frameReader) readRaw() (int, error) {
	fr.rn, fr.rerr, fr.needBuf, fr.waited = 0, nil, false, false
	if fr.waitsFirst() && fr.c.rstate.CompareAndSwap(0, readWaiting) {
		if fr.r == fr.w {
			fr.putBuf() // idle: no buffer held while waiting
		}
		fr.wres = waitNone
		err := fr.raw.Control(fr.waitFn)
		fr.c.rstate.Store(0)
		switch {
		case err == nil && fr.wres == waitDone:
			fr.waited = true
			return fr.rawResult()
		case fr.wres == waitNoBuf:
			fr.take() // here, not in the callback: see rawRead
		}
	}
	if err := fr.raw.Read(fr.readFn); err != nil {
		return 0, err
	}
	for fr.needBuf { // readable, and the pool was empty: allocate here
		fr.take()
		fr.needBuf = false
		if err := fr.raw.Read(fr.readFn); err != nil {
			return 0, err
		}
	}
	return fr.rawResult()
}

// rawResult is what a raw read got: rn bytes, rerr, or the peer's EOF.
func (fr *frameReader) rawResult() (int, error) {
	if fr.rerr != nil {
		return 0, fr.rerr
	}
	if fr.rn == 0 {
		return 0, io.EOF
	}
	fr.c.in.Add(uint64(fr.rn))
	return fr.rn, nil
}

// waitRead is readRaw's wait, RawConn.Control's callback: it parks until
// the socket is readable, then takes a pooled buffer (never allocating:
// see rawRead) and reads into buf[w:] with one read system call, which
// cannot block. It runs at the bottom of an idle connection's stack.
func (fr *frameReader) waitRead(fd uintptr) {
	if !waitReadable(tcpNetFD(fr.c.Conn.(*net.TCPConn))) {
		return
	}
	if fr.buf == nil {
		bp, _ := rawBufPool.Get().(*[]byte)
		if bp == nil {
			fr.wres = waitNoBuf
			return
		}
		fr.bp, fr.buf = bp, (*bp)[:cap(*bp)]
	}
	p := fr.buf[fr.w:]
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	switch e {
	case 0:
		fr.rn, fr.wres = int(n), waitDone
	case syscall.EAGAIN, syscall.EINTR: // a stale edge: read first
	default:
		fr.rerr, fr.wres = &net.OpError{Op: "read", Net: "tcp", Err: e}, waitDone
	}
}

// rawRead is readRaw's callback: false parks until the socket is
// readable, without a buffer unless a partial frame is held.
//
// The callback runs at the bottom of the goroutine's stack, below the
// poller's frames: it never allocates (a pool miss goes back up to
// readRaw, needBuf), so that an idle WebSocket's goroutine never needs
// more than its first 2 KiB of stack.
func (fr *frameReader) rawRead(fd uintptr) bool {
	if fr.buf == nil {
		bp, _ := rawBufPool.Get().(*[]byte)
		if bp == nil {
			fr.needBuf = true
			return true
		}
		fr.bp, fr.buf = bp, (*bp)[:cap(*bp)]
	}
	for {
		n, err := syscall.Read(int(fd), fr.buf[fr.w:])
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if fr.r == fr.w {
				fr.r, fr.w = 0, 0
				rawBufPool.Put(fr.bp)
				fr.bp, fr.buf = nil, nil
			}
			return false
		case nil:
			fr.rn = n
		default:
			fr.rerr = &net.OpError{Op: "read", Net: "tcp", Err: err}
		}
		return true
	}
}
