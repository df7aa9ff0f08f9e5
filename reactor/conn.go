package reactor

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/ipc"
)

// Message types, as in RFC 6455 (and fasthttp/websocket).
const (
	Text   = websocket.TextMessage
	Binary = websocket.BinaryMessage
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

	// Set once at upgrade.
	ws *websocket.Conn
	hs ipc.Handshake // owned copies

	// Slot is the worker serving this WebSocket in PROCESS mode (-1: none).
	Slot atomic.Int32
	// Data is the handler's per-connection state.
	Data any

	mu      sync.Mutex
	queue   []outMsg
	queued  int // bytes queued
	writing bool
	closing bool // a close is queued: accept no more output
	full    bool // OnBufferFull fired, OnBufferDrain pending
	rooms   []string
}

type outMsg struct {
	op   int
	data []byte
	code int     // close code when op == websocket.CloseMessage
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
func (c *Conn) IsWebSocket() bool { return c.ws != nil }

// Handshake returns the WebSocket upgrade request (nil fields for HTTP).
func (c *Conn) Handshake() *ipc.Handshake { return &c.hs }

// Read counts bytes in.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.in.Add(uint64(n))
	return n, err
}

// Write counts bytes out.
func (c *Conn) Write(b []byte) (int, error) {
	c.writeSince.Store(c.r.clock.Load())
	n, err := c.Conn.Write(b)
	c.writeSince.Store(0)
	c.out.Add(uint64(n))
	return n, err
}

// Close closes the socket and forgets the connection, once.
func (c *Conn) Close() error {
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
	if c.ws == nil {
		return ipc.NoConnection
	}
	bp := bufPool.Get().(*[]byte)
	*bp = append((*bp)[:0], data...)
	out := c.enqueue(outMsg{op: op, data: *bp, bp: bp})
	if out != ipc.OK {
		bufPool.Put(bp)
	}
	return out
}

// CloseWith queues a close frame with code and reason after any queued
// output, then closes the socket.
func (c *Conn) CloseWith(code int, reason string) ipc.Outcome {
	if c.ws == nil {
		c.Close()
		return ipc.OK
	}
	return c.enqueue(outMsg{op: websocket.CloseMessage, code: code, data: []byte(reason)})
}

func (c *Conn) enqueue(m outMsg) ipc.Outcome {
	c.mu.Lock()
	if c.closing || c.closed.Load() {
		c.mu.Unlock()
		return ipc.Closed
	}
	if m.op != websocket.CloseMessage && c.queued > 0 && c.queued+len(m.data) > c.r.opts.MaxSendBuffer {
		fire := !c.full
		c.full = true
		c.mu.Unlock()
		if fire {
			c.r.m.BufferFull.Add(1)
			c.r.h.BufferFull(c)
		}
		return ipc.BufferFull
	}
	if m.op == websocket.CloseMessage {
		c.closing = true
	}
	c.queue = append(c.queue, m)
	c.queued += len(m.data)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		c.r.flushers.Go(c)
	}
	return ipc.OK
}

// flush is the connection's only writer while it runs.
func (c *Conn) flush() {
	var batch []outMsg
	for {
		c.mu.Lock()
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

		n, msgs, sent := 0, 0, 0
		for i := range batch {
			m := &batch[i]
			if err := c.write(m); err != nil {
				c.abort()
			} else if m.op != websocket.CloseMessage {
				msgs++
				sent += len(m.data)
			}
			n += len(m.data)
			if m.bp != nil && cap(*m.bp) <= 64<<10 {
				bufPool.Put(m.bp)
			}
			m.data, m.bp = nil, nil
		}
		c.r.m.WSMessagesOut.Add(uint64(msgs))
		c.r.m.WSBytesOut.Add(uint64(sent))
		c.mu.Lock()
		c.queued -= n
		c.mu.Unlock()
	}
}

func (c *Conn) write(m *outMsg) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	if m.op == websocket.CloseMessage {
		deadline := time.Now().Add(c.r.opts.WriteTimeout)
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(m.code, string(m.data)), deadline)
		// Give the peer a moment to answer the close, then cut.
		time.AfterFunc(time.Second, func() { c.Close() })
		return nil
	}
	return c.ws.WriteMessage(m.op, m.data) // the sweeper bounds a stuck write
}

// abort drops queued output after a write error and closes the socket.
func (c *Conn) abort() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
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
}

// Info returns the connection's description; worker is the serving worker.
func (c *Conn) Info(worker int) Info {
	proto := "http"
	if c.ws != nil {
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
	}
}
