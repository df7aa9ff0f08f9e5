package forkd

import (
	"net/url"
	"strings"
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
	uri := c.c.Handshake().URI
	if p, ok := plainPath(uri); ok {
		return p
	}
	u, err := url.ParseRequestURI(string(uri))
	if err != nil {
		return ""
	}
	return u.Path
}

// plainPath returns the path of a request URI whose path needs no parsing:
// a '/' and bytes that url.ParseRequestURI keeps as they are (no escape,
// no fragment), and no control byte anywhere (which it refuses). Path is
// called in OnOpen of nearly every application: without the url.URL, a
// connection's OnOpen allocates and grows its goroutine's stack less.
func plainPath(uri []byte) (string, bool) {
	if len(uri) == 0 || uri[0] != '/' {
		return "", false
	}
	end := len(uri)
	for i, b := range uri {
		if b < 0x20 || b == 0x7f {
			return "", false
		}
		if end < len(uri) {
			continue // the query: only control bytes matter
		}
		switch {
		case b == '?':
			end = i
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case strings.IndexByte("/-._~!$&'()*+,;=:@", b) >= 0:
		default:
			return "", false
		}
	}
	return string(uri[:end]), true
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
