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
// the poller until the socket is readable. The syscalls are those of
// net.Conn.Read (a read, EAGAIN, wait, a read); the buffer is pooled
// across connections, so 10,000 idle ones share a handful.
//
// TLS connections keep reading through their net.Conn (crypto/tls holds
// its own buffers) with a buffer held for the connection's life.

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
		if raw, err := tc.SyscallConn(); err == nil {
			fr.raw = raw
			fr.readFn = fr.rawRead
			c.rawc = raw
		}
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

// readRaw reads into buf[w:], taking the buffer only once the socket is
// readable (see rawRead).
func (fr *frameReader) readRaw() (int, error) {
	fr.rn, fr.rerr, fr.needBuf = 0, nil, false
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
	if fr.rerr != nil {
		return 0, fr.rerr
	}
	if fr.rn == 0 {
		return 0, io.EOF
	}
	fr.c.in.Add(uint64(fr.rn))
	return fr.rn, nil
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
