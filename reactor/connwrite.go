package reactor

import (
	"net"
	"sync"
	"time"

	"github.com/forkd/forkd/ipc"
)

type outMsg struct {
	op   int
	data []byte
	code int     // close code when op == opClose
	bp   *[]byte // pooled buffer holding data, returned after the write
}

// Write counts bytes out.
func (c *Conn) Write(b []byte) (int, error) {
	c.writeSince.Store(c.r.clock.Load())
	n, err := c.Conn.Write(b)
	c.writeSince.Store(0)
	c.out.Add(uint64(n))
	return n, err
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
		if c.endOnly && m.code == CloseAbnormal {
			m = outMsg{op: opFramed, code: 1} // no frame: the end, after the output (see endHalfClosed)
		} else if c.deferred && m.code == c.oweCode && len(m.data) == 2 && c.oweReason != "" {
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
