package reactor

import (
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/forkd/forkd/ipc"
)

// Message types, as in RFC 6455.
const (
	Text   = opText
	Binary = opBinary
)

// Conn is one client connection held by a reactor: an HTTP keep-alive
// connection, or a WebSocket after its upgrade. It wraps the accepted
// net.Conn to count bytes, and owns the connection's output queue: every
// write goes through the queue and one writer goroutine at a time, taken
// from a pool on demand, so no two goroutines ever write one socket.
type Conn struct {
	net.Conn
	id       uint64
	r        *Reactor
	listener *Listener
	since    time.Time
	in, out  atomic.Uint64
	lastRead atomic.Int64 // unix nanos of the last message, for heartbeats
	over     bool         // accepted over MaxConns: answered with 503/1013 and closed
	overIP   bool         // over because of the per-address limit
	ipHeld   bool         // counted in the per-address limiter (released by forget)
	// readFull: the last Read filled its buffer, so the socket may hold
	// more that raises no new edge; the next keep-alive wait reads first
	// (waitNextRequest). Only the reading goroutine touches it.
	readFull bool
	ip       netip.Addr // the client's address, when a per-address limit is on
	closed   atomic.Bool
	// idleSince is when an HTTP keep-alive connection went idle between
	// requests (unix nanos), 0 while a request is active, idleShut once a
	// drain has shut it.
	idleSince atomic.Int64
	// Timeouts are kept by the reactor's sweeper, not by per-request
	// deadlines (three runtime timer updates per request, about a tenth
	// of a worker's CPU): when a request began to be read (0: none),
	// whether its handler runs, and when a write began (0: none), all on
	// the reactor's coarse clock.
	activeSince atomic.Int64
	handling    atomic.Bool
	writeSince  atomic.Int64

	// rstate keeps the read loop's wait for a WebSocket's next message,
	// which parks without poll.FD's read lock, apart from any other read
	// of its socket (see wsread.go): readWaiting while the loop waits,
	// else how many reads through Read are under way.
	rstate atomic.Int32

	// Set once at upgrade.
	ws   atomic.Bool
	rawc syscall.RawConn // plain TCP: direct writes (wswrite.go); nil: TLS
	hs   ipc.Handshake   // owned copies
	// closeDone is closed once our close frame has been written (or could
	// not be): the closing handshake's half that is ours is done.
	closeDone chan struct{}
	// lingerOnClose: an HTTP connection closed after an error answer,
	// whose unread input must be drained, not reset (see lingerClose).
	lingerOnClose atomic.Bool
	// hdr scans HTTP header bytes for bare LFs (see httpcheck.go).
	hdr hdrScan
	// idle waits for a plain TCP keep-alive connection's next request
	// (idlewait_linux.go); made at its first wait.
	idle *idleWait

	// Slot is the worker serving this WebSocket in PROCESS mode (-1: none).
	Slot atomic.Int32
	// Data is the handler's per-connection state.
	Data any
	// user is the uid bound to the connection and its session (users.go).
	user userState

	mu      sync.Mutex
	queue   []outMsg
	queued  int // bytes queued
	writing bool
	closing bool // a close is queued: accept no more output
	full    bool // OnBufferFull fired, OnBufferDrain pending
	failed  bool // a direct write failed: the flusher closes (failDirect)
	rooms   []string
	// The closing handshake: the code of our close frame once queued; a
	// close we owe (the reply to the peer's close, or the one failing the
	// connection: the read loop has ended), its code and reason; the close
	// deferred to the handler (DeferCloseReply); our close written.
	sentCode  int
	owe       bool
	oweCode   int
	oweReason string
	deferred  bool
	closeSent bool
	// peerDone: the peer's close has come and nothing of its is unread
	// (see frameReader.peerDone): the socket closes without lingering.
	// closeOK: our close frame was written whole.
	peerDone bool
	closeOK  bool

	// The writer's scratch (only the flushing goroutine touches them).
	hdrs []byte
	iov  [][]byte
	bufs net.Buffers
}

type outMsg struct {
	op   int
	data []byte
	code int     // close code when op == opClose
	bp   *[]byte // pooled buffer holding data, returned after the write
}

const idleShut = -1

// ID returns the connection id (see MakeID).
func (c *Conn) ID() uint64 { return c.id }

// Listener returns the listener that accepted the connection.
func (c *Conn) Listener() *Listener { return c.listener }

// Since returns when the connection was accepted.
func (c *Conn) Since() time.Time { return c.since }

// IsWebSocket reports whether the connection has been upgraded.
func (c *Conn) IsWebSocket() bool { return c.ws.Load() }

// Handshake returns the WebSocket upgrade request (nil fields for HTTP).
func (c *Conn) Handshake() *ipc.Handshake { return &c.hs }

// Read counts bytes in (and follows an HTTP request's header block: see
// hdrScan).
func (c *Conn) Read(b []byte) (int, error) {
	if c.ws.Load() {
		return c.readWS(b)
	}
	var n int
	var err error
	done := false
	if c.hdr.state == hdrWaitPeek {
		n, done, err = c.waitNextRequest(b)
	}
	if c.hdr.state != hdrOff {
		if err := c.hdr.before(); err != nil {
			return 0, err
		}
	}
	if !done {
		n, err = c.Conn.Read(b)
	}
	c.readFull = n == len(b) && n > 0
	c.in.Add(uint64(n))
	if c.hdr.state == hdrScanning {
		c.hdr.scan(b[:n])
	}
	return n, err
}

// readWaiting is rstate while the read loop waits (see wsread.go).
const readWaiting = -1

// readWS reads a WebSocket's socket through its net.Conn (a TLS one, what
// fasthttp buffered past the upgrade, a large payload, finish's drain),
// never while its read loop waits without poll.FD's lock (enterRead).
func (c *Conn) readWS(b []byte) (int, error) {
	c.enterRead()
	n, err := c.Conn.Read(b)
	c.rstate.Add(-1)
	c.in.Add(uint64(n))
	return n, err
}

// enterRead counts a read in once no lockless wait is under way. The read
// loop itself never finds one (it reads here only between its waits);
// another goroutine that does (nothing in this package reads a WebSocket
// from outside its loop) ends the loop's reading: it wakes the wait with a
// past read deadline, under which both then read (a timeout, unless the
// caller sets its own deadline after), and waits until the wait is left,
// so that the runtime never sees two waits on one socket.
func (c *Conn) enterRead() {
	woke := false
	for {
		s := c.rstate.Load()
		if s >= 0 {
			if c.rstate.CompareAndSwap(s, s+1) {
				return
			}
			continue
		}
		if !woke {
			_ = c.Conn.SetReadDeadline(time.Unix(0, 1))
			woke = true
		}
		runtime.Gosched()
	}
}

// Write counts bytes out.
func (c *Conn) Write(b []byte) (int, error) {
	c.writeSince.Store(c.r.clock.Load())
	n, err := c.Conn.Write(b)
	c.writeSince.Store(0)
	c.out.Add(uint64(n))
	return n, err
}

// Close closes the socket and forgets the connection, once. An HTTP
// connection answered with an error while the client may still be sending
// (413, 431, 400, ...) is closed lingering (see lingerClose), so that the
// client reads the answer instead of a reset.
func (c *Conn) Close() error {
	if c.lingerOnClose.Load() && !c.ws.Load() && c.r.spawnLinger(c) {
		return nil
	}
	return c.closeNow()
}

// closeNow closes the socket and forgets the connection, once.
func (c *Conn) closeNow() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.r.forget(c)
	return c.Conn.Close()
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Send queues a WebSocket message. It never blocks on the network: the
// outcome is ipc.OK once queued, ipc.BufferFull when the queue would exceed
// the reactor's MaxSendBuffer (OnBufferFull fires), ipc.Closed once the
// connection is closing, ipc.NoConnection for a plain HTTP connection.
func (c *Conn) Send(op int, data []byte) ipc.Outcome {
	if !c.ws.Load() {
		return ipc.NoConnection
	}
	if op != Text && op != Binary {
		return ipc.Failed
	}
	if out, ok := c.trySendDirect(op, data); ok {
		return out
	}
	bp := bufPool.Get().(*[]byte)
	*bp = append((*bp)[:0], data...)
	out := c.enqueue(outMsg{op: op, data: *bp, bp: bp})
	if out != ipc.OK {
		bufPool.Put(bp)
	}
	return out
}

// pong queues the answer to a ping (dropped when the queue is full or
// closing: the peer will ping again, or time out).
func (c *Conn) pong(data []byte) {
	bp := bufPool.Get().(*[]byte)
	*bp = append((*bp)[:0], data...)
	if c.enqueue(outMsg{op: opPong, data: *bp, bp: bp}) != ipc.OK {
		bufPool.Put(bp)
	}
}

// CloseWith queues a close frame with code and reason after any queued
// output, then closes the socket.
func (c *Conn) CloseWith(code int, reason string) ipc.Outcome {
	if !c.ws.Load() {
		c.Close()
		return ipc.OK
	}
	return c.enqueue(outMsg{op: opClose, code: code, data: closePayload(code, reason)})
}

// DeferCloseReply, called by a Handler's Close, says that the handler
// will send the close the reactor owes (the reply to the peer's close, or
// the close failing the connection) itself, with CloseWith, once every
// message that came before has been handled and answered, as PROCESS
// mode's worker does. It reports false, and defers nothing, unless such a
// close is owed and not yet queued. The reactor sends it anyway after a
// bound.
func (c *Conn) DeferCloseReply() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.owe || c.closing || c.closed.Load() {
		return false
	}
	c.deferred = true
	return true
}

// owed records the close the read loop ended owing; done: see peerDone.
func (c *Conn) owed(code int, reason string, done bool) {
	c.mu.Lock()
	c.owe, c.oweCode, c.oweReason = true, code, reason
	c.peerDone = done
	c.mu.Unlock()
}

// EchoCode is the code a close reply carries: the peer's, or 1000 when
// the peer's close had none.
func EchoCode(code int) int {
	if code == CloseNoStatus || code == 0 {
		return CloseNormal
	}
	return code
}

func (c *Conn) enqueue(m outMsg) ipc.Outcome {
	c.mu.Lock()
	if c.closing || c.closed.Load() {
		c.mu.Unlock()
		return ipc.Closed
	}
	if m.op != opClose && c.queued > 0 && c.queued+len(m.data) > c.r.opts.MaxSendBuffer {
		if m.op == opPong {
			c.mu.Unlock()
			return ipc.BufferFull
		}
		fire := !c.full
		c.full = true
		c.mu.Unlock()
		if fire {
			c.r.m.BufferFull.Add(1)
			c.r.h.BufferFull(c)
		}
		return ipc.BufferFull
	}
	if m.op == opClose {
		c.closing = true
		c.sentCode = m.code
		if c.deferred && m.code == c.oweCode && len(m.data) == 2 && c.oweReason != "" {
			m.data = closePayload(m.code, c.oweReason) // the handler's echo of a failure: keep its reason
		}
	}
	c.queue = append(c.queue, m)
	c.queued += len(m.data)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start && (c.rawc == nil || !c.tryFlushDirect()) {
		c.r.flushers.Go(c)
	}
	return ipc.OK
}

// flush is the connection's only writer while it runs. Whatever is queued
// when it looks goes out in one write (writev on a TCP socket).
func (c *Conn) flush() {
	var batch []outMsg
	for {
		c.mu.Lock()
		if c.failed { // a direct write failed (failDirect)
			c.failed = false
			c.mu.Unlock()
			c.abort()
			c.mu.Lock()
		}
		if len(c.queue) == 0 {
			c.writing = false
			drained := c.full
			c.full = false
			c.mu.Unlock()
			if drained {
				c.r.h.BufferDrain(c)
			}
			return
		}
		batch, c.queue = c.queue, batch[:0]
		c.mu.Unlock()

		err := c.writeBatch(batch)
		n, msgs, sent, wroteClose := 0, 0, 0, false
		for i := range batch {
			m := &batch[i]
			n += len(m.data)
			switch m.op {
			case opClose:
				wroteClose = true
			case opFramed:
				wroteClose = wroteClose || m.code != 0
			case opText, opBinary:
				msgs++
				sent += len(m.data)
			}
			if m.bp != nil && cap(*m.bp) <= 64<<10 {
				bufPool.Put(m.bp)
			}
			m.data, m.bp = nil, nil
		}
		if err == nil {
			c.r.m.WSMessagesOut.Add(uint64(msgs))
			c.r.m.WSBytesOut.Add(uint64(sent))
		}
		c.mu.Lock()
		c.queued -= n
		c.mu.Unlock()
		if wroteClose {
			c.closeWritten(err)
		}
		if err != nil {
			c.abort()
		}
	}
}

// writeBatch writes the frames of batch in one vectored write.
func (c *Conn) writeBatch(batch []outMsg) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	hdrs := c.hdrs[:0]
	for i := range batch {
		if m := &batch[i]; m.op != opFramed {
			hdrs = appendFrameHeader(hdrs, m.op, len(m.data))
		}
	}
	iov := c.iov[:0]
	off := 0
	for i := range batch {
		m := &batch[i]
		if m.op == opFramed {
			iov = append(iov, m.data)
			continue
		}
		hl := frameHeaderLen(len(m.data))
		iov = append(iov, hdrs[off:off+hl])
		off += hl
		if len(m.data) > 0 {
			iov = append(iov, m.data)
		}
	}
	c.hdrs = hdrs
	c.writeSince.Store(c.r.clock.Load())
	if c.ws.Load() {
		c.r.sweepWrites(c, true)
	}
	c.bufs = iov                     // a field: a local would escape (WriteTo takes its address)
	n, err := c.bufs.WriteTo(c.Conn) // the sweeper bounds a stuck write
	c.bufs = nil
	c.writeSince.Store(0)
	if c.ws.Load() {
		c.r.sweepWrites(c, false)
	}
	c.out.Add(uint64(n))
	clear(iov)
	c.iov = iov[:0]
	return err
}

func frameHeaderLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 0xffff:
		return 4
	}
	return 10
}

// closeWritten runs once our close frame is out (or failed): the write
// side is shut at once, so the peer sees the TCP connection end right
// after our close frame (RFC 6455 7.1.1: the server closes first). If the
// peer has not closed yet, its reply is awaited for closeWait: the read
// loop ends then. Waiters on closeDone are released.
func (c *Conn) closeWritten(err error) {
	c.mu.Lock()
	already := c.closeSent
	c.closeSent = true
	owe, done := c.owe, c.peerDone
	if !already {
		c.closeOK = err == nil
	}
	c.mu.Unlock()
	if already {
		return
	}
	if err == nil && !done { // done: finish closes at once, the FIN goes then
		closeWrite(c.Conn)
		if !owe {
			_ = c.Conn.SetReadDeadline(time.Now().Add(closeWait))
		}
	}
	if c.closeDone != nil {
		close(c.closeDone)
	}
}

// abort drops queued output after a write error and closes the socket.
func (c *Conn) abort() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.closeWritten(net.ErrClosed)
	c.Close()
}

// QueuedBytes reports output not yet written.
func (c *Conn) QueuedBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued
}

// Info describes a connection for `server connections`.
type Info struct {
	ID       string `json:"id"`
	Worker   int    `json:"worker"`
	Listener string `json:"listener"`
	Remote   string `json:"remote"`
	Protocol string `json:"protocol"`
	Path     string `json:"path,omitempty"`
	Since    string `json:"since"`
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
	Queued   int    `json:"queued,omitempty"`
	UID      string `json:"uid,omitempty"`
}

// Info returns the connection's description; worker is the serving worker.
func (c *Conn) Info(worker int) Info {
	proto := "http"
	if c.ws.Load() {
		proto = "websocket"
	}
	return Info{
		ID:       FormatID(c.id),
		Worker:   worker,
		Listener: c.listener.Name,
		Remote:   c.RemoteAddr().String(),
		Protocol: proto,
		Path:     string(c.hs.URI),
		Since:    c.since.UTC().Format(time.RFC3339Nano),
		BytesIn:  c.in.Load(),
		BytesOut: c.out.Load(),
		Queued:   c.QueuedBytes(),
		UID:      c.UID(),
	}
}
