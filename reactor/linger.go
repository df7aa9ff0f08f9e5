package reactor

import (
	"io"
	"net"
	"sync"
	"time"
)

const (
	// closeWait bounds how long a close we started waits for the peer's
	// reply before the socket is closed anyway.
	closeWait = time.Second
	// closeReplyWait bounds how long the reply to a peer's close waits
	// for the handler (PROCESS mode: the worker) to answer the messages
	// that came before it.
	closeReplyWait = 5 * time.Second
	// lingerTime and lingerBytes bound a lingering close: after our last
	// bytes and a FIN, what the peer still sends is read and discarded
	// for at most this long, and this much beyond the package size.
	lingerTime  = 2 * time.Second
	lingerBytes = 64 << 20
)

// closeWrite shuts the write side (a FIN after what was written). A TLS
// connection sends its close_notify instead.
func closeWrite(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

var discardPool = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// drain reads and discards from src until EOF, an error, the deadline
// (set on nc) or the byte limit, so that closing nc afterwards does not
// reset the connection: Linux answers a close with unread input by RST,
// and a RST can destroy data the peer has not read yet (our last answer).
func drain(nc net.Conn, src io.Reader, d time.Duration, limit int64) {
	_ = nc.SetReadDeadline(time.Now().Add(d))
	bp := discardPool.Get().(*[]byte)
	defer discardPool.Put(bp)
	for limit > 0 {
		n, err := src.Read(*bp)
		limit -= int64(n)
		if err != nil {
			return
		}
	}
}

// spawnLinger closes an HTTP connection lingering, in its own goroutine
// (Close must not block: the reactor's Close closes every connection in a
// row). It reports false once the reactor is closed: close now then.
func (r *Reactor) spawnLinger(c *Conn) bool {
	r.mu.RLock()
	if r.closed.Load() {
		r.mu.RUnlock()
		return false
	}
	r.wg.Add(1)
	r.mu.RUnlock()
	go func() {
		defer r.wg.Done()
		closeWrite(c.Conn)
		drain(c.Conn, c.Conn, lingerTime, int64(r.opts.MaxPackageSize)+lingerBytes)
		c.closeNow()
	}()
	return true
}
