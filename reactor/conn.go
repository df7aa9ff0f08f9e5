package reactor

import (
	"net"
	"net/netip"
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
	// peeked is the idleSince (HTTP) or the bytes read (WebSocket) at the
	// wait the sweeper last looked at for a FIN (wakeIfPeerClosed).
	peeked atomic.Int64
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
	// endOnly: the peer half-closed without a close frame, and the close
	// owed is no frame, only the end of the connection (endHalfClosed).
	endOnly bool

	// The writer's scratch (only the flushing goroutine touches them).
	hdrs []byte
	iov  [][]byte
	bufs net.Buffers
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
