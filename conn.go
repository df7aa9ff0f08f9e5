package forkd

import (
	"net/url"
	"sync/atomic"
	"time"

	"github.com/forkd/forkd/worker"
)

// Conn is a WebSocket connection, handed to the callbacks. Its methods are
// safe from any goroutine of the worker.
type Conn struct {
	c     *worker.Conn
	w     *Worker
	query url.Values
	value atomic.Value
}

func (w *Worker) conn(c *worker.Conn) *Conn {
	if h, ok := c.Ext.(*Conn); ok {
		return h
	}
	h := &Conn{c: c, w: w}
	c.Ext = h
	return h
}

// ID is the connection's id: pass it to any worker's Push, Close, Join.
func (c *Conn) ID() ConnID { return ConnID(c.c.ID()) }

// Worker is the worker running this connection's callbacks.
func (c *Conn) Worker() *Worker { return c.w }

// Send queues a message to this connection, after everything sent to it
// before. In BASE mode its error is the final outcome. In PROCESS mode
// Send does not wait for the master: nil means the message was handed to
// it; ErrTooLarge and ErrUnavailable (this worker's queue to the master
// is full) are known at once, while a failure only the master can see
// (ErrBufferFull, or ErrClosed/ErrNoConnection when the client went away
// first) is reported later: by Flush, by OnBufferFull, and in the
// forkd_pushes_total metric. What OnClose sends still goes out before the
// close reply, in both modes. See docs/guide.md "Send's outcome".
func (c *Conn) Send(t MessageType, data []byte) error {
	return outcomeErr(c.c.Send(int(t), data))
}

// Flush waits until every earlier Send to this connection has its outcome
// and returns the first failure among them not yet returned by a Flush
// (nil: all were queued to the connection). In BASE mode Send's error is
// already final and Flush returns nil at once; in PROCESS mode it costs
// one round trip to the master. Send then Flush is a Send that waits.
func (c *Conn) Flush() error {
	return outcomeErr(c.c.Flush())
}

// SendText sends a text message.
func (c *Conn) SendText(s string) error { return c.Send(TextMessage, []byte(s)) }

// Close closes the connection with a WebSocket close code and reason,
// after what is already queued to it.
func (c *Conn) Close(code int, reason string) error {
	return outcomeErr(c.c.Close(code, reason))
}

// Join puts this connection in a room.
func (c *Conn) Join(room string) error { return c.w.Join(c.ID(), room) }

// Leave takes this connection out of a room.
func (c *Conn) Leave(room string) error { return c.w.Leave(c.ID(), room) }

// URI is the upgrade request's path and query, as sent.
func (c *Conn) URI() string { return string(c.c.Handshake().URI) }

// Path is the upgrade request's path.
func (c *Conn) Path() string {
	u, err := url.ParseRequestURI(c.URI())
	if err != nil {
		return ""
	}
	return u.Path
}

// Query returns a query parameter of the upgrade request.
func (c *Conn) Query(name string) string {
	if c.query == nil {
		u, err := url.ParseRequestURI(c.URI())
		if err != nil {
			c.query = url.Values{}
		} else {
			c.query = u.Query()
		}
	}
	return c.query.Get(name)
}

// Header returns a header of the upgrade request.
func (c *Conn) Header(name string) string { return c.c.Header(name) }

// RemoteAddr is the client's address.
func (c *Conn) RemoteAddr() string { return string(c.c.Handshake().Remote) }

// Since is when the client connected.
func (c *Conn) Since() time.Time { return time.UnixMilli(c.c.Handshake().Since) }

// SetContext stores per-connection state; Context returns it. In PROCESS
// mode a worker that takes over a connection (OnResume) starts without it:
// what must survive that goes in the connection's Session, which the
// process holding the connection keeps.
func (c *Conn) SetContext(v any) { c.value.Store(&v) }

// Context returns what SetContext stored, or nil.
func (c *Conn) Context() any {
	if p, ok := c.value.Load().(*any); ok {
		return *p
	}
	return nil
}
