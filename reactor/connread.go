package reactor

import (
	"runtime"
	"time"
)

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
