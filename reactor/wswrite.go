package reactor

import (
	"sync"
	"syscall"

	"github.com/forkd/forkd/ipc"
)

// Writing a WebSocket message straight from Send.
//
// Queued output is written by a pooled flusher goroutine (see flush): a
// goroutine handoff, and a writev of header and payload, per message. When
// nothing is queued or being written, Send instead writes the frame itself
// with one non-blocking write(2) through the connection's RawConn (header
// and payload copied into one pooled buffer): the callback returns true
// after a single attempt, so Send still never waits on the network. What
// the socket did not take (EAGAIN, a short write) is queued, already framed
// (opFramed), in front of anything sent meanwhile, and the flusher writes
// it as before. Order is kept: a direct write happens only while the queue
// is empty and no flusher runs, and c.writing excludes any other writer
// while it does.

// directMax is the largest payload written directly; larger ones go
// through the queue (writev, no copy).
const directMax = 16 << 10

// opFramed marks an outMsg whose data is already a frame's bytes (the rest
// of a direct write): written as is, no header.
const opFramed = -1

type directWriter struct {
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

var directPool = sync.Pool{New: func() any {
	dw := &directWriter{buf: make([]byte, 0, 512)}
	dw.fn = dw.write
	return dw
}}

func (dw *directWriter) write(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), dw.buf)
		if err == syscall.EINTR {
			continue
		}
		dw.n, dw.err = max(n, 0), err
		return true // one attempt: never park
	}
}

// trySendDirect writes a data message directly when the connection's
// output is idle; ok is false when it did not (the caller queues it).
func (c *Conn) trySendDirect(op int, data []byte) (ipc.Outcome, bool) {
	if c.rawc == nil || len(data) > directMax {
		return 0, false
	}
	c.mu.Lock()
	if c.writing || c.closing || len(c.queue) != 0 || c.closed.Load() {
		c.mu.Unlock()
		return 0, false
	}
	c.writing = true
	c.mu.Unlock()

	dw := directPool.Get().(*directWriter)
	dw.buf = appendFrameHeader(dw.buf[:0], op, len(data))
	dw.buf = append(dw.buf, data...)
	dw.n, dw.err = 0, nil
	if err := c.rawc.Write(dw.fn); err != nil && dw.err == nil {
		dw.err = err // the socket is closed
	}
	n, werr := dw.n, dw.err
	c.out.Add(uint64(n))
	c.r.m.WSMessagesOut.Add(1)
	c.r.m.WSBytesOut.Add(uint64(len(data)))

	var rest outMsg
	if n < len(dw.buf) && (werr == nil || werr == syscall.EAGAIN) {
		bp := bufPool.Get().(*[]byte)
		*bp = append((*bp)[:0], dw.buf[n:]...)
		rest = outMsg{op: opFramed, data: *bp, bp: bp}
		werr = nil
	}
	if cap(dw.buf) <= 64<<10 {
		directPool.Put(dw)
	}
	if werr != nil {
		c.failDirect()
		return ipc.OK, true
	}
	c.mu.Lock()
	c.pushFront(rest)
	if len(c.queue) == 0 {
		c.writing = false
		c.mu.Unlock()
		return ipc.OK, true
	}
	c.mu.Unlock()
	c.r.flushers.Go(c) // what came meanwhile, or the rest: c.writing stays ours
	return ipc.OK, true
}

// tryFlushDirect is enqueue's path when it has just made its caller the
// connection's writer (c.writing): what is queued (a pong, a close, a
// message queued behind nothing) is framed into one pooled buffer and
// written with one non-blocking write. The rest, if the socket did not
// take it all, is queued framed in front and left to the flusher, which
// also gets anything queued meanwhile. It reports false, having done
// nothing, when the queue is too large to copy: the flusher writes it.
func (c *Conn) tryFlushDirect() bool {
	c.mu.Lock()
	total := 0
	for i := range c.queue {
		total += maxFrameHeader + len(c.queue[i].data)
	}
	if total > directMax || len(c.queue) == 0 {
		c.mu.Unlock()
		return false
	}
	batch := c.queue
	c.queue = nil
	c.mu.Unlock()

	dw := directPool.Get().(*directWriter)
	buf := dw.buf[:0]
	n, msgs, sent, hasClose := 0, 0, 0, false
	for i := range batch {
		m := &batch[i]
		switch m.op {
		case opFramed:
			hasClose = hasClose || m.code != 0
		case opClose:
			hasClose = true
			buf = appendFrameHeader(buf, m.op, len(m.data))
		case opText, opBinary:
			msgs++
			sent += len(m.data)
			fallthrough
		default:
			buf = appendFrameHeader(buf, m.op, len(m.data))
		}
		buf = append(buf, m.data...)
		n += len(m.data)
		if m.bp != nil && cap(*m.bp) <= 64<<10 {
			bufPool.Put(m.bp)
		}
		m.data, m.bp = nil, nil
	}
	dw.buf = buf
	dw.n, dw.err = 0, nil
	if err := c.rawc.Write(dw.fn); err != nil && dw.err == nil {
		dw.err = err
	}
	w, werr := dw.n, dw.err
	c.out.Add(uint64(w))
	c.r.m.WSMessagesOut.Add(uint64(msgs))
	c.r.m.WSBytesOut.Add(uint64(sent))
	var rest outMsg
	if w < len(buf) && (werr == nil || werr == syscall.EAGAIN) {
		bp := bufPool.Get().(*[]byte)
		*bp = append((*bp)[:0], buf[w:]...)
		rest = outMsg{op: opFramed, data: *bp, bp: bp}
		if hasClose {
			rest.code = 1 // the flusher reports our close written
		}
		werr = nil
	}
	if cap(dw.buf) <= 64<<10 {
		directPool.Put(dw)
	}
	c.mu.Lock()
	c.queued -= n
	c.mu.Unlock()
	if hasClose && rest.data == nil {
		c.closeWritten(werr)
	}
	if werr != nil {
		c.failDirect()
		return true
	}
	c.mu.Lock()
	if c.queue == nil {
		c.queue = batch[:0] // reuse the slice
	}
	c.pushFront(rest)
	if len(c.queue) == 0 {
		c.writing = false
		drained := c.full
		c.full = false
		c.mu.Unlock()
		if drained {
			c.r.h.BufferDrain(c)
		}
		return true
	}
	c.mu.Unlock()
	c.r.flushers.Go(c)
	return true
}

// failDirect hands a direct write's failure to the flusher, which closes
// the connection (abort), as a failed flush does: a direct write runs on
// the sender's goroutine (a worker's ipc read loop delivering a broadcast,
// a push, a Close), and closing takes the connection out of its rooms,
// whose reports may wait on that very goroutine (a BASE worker's join
// waits for the master's answer, which its read loop brings): closing
// there deadlocked the worker. Nothing more is queued (closing); c.writing
// stays set for the flusher.
func (c *Conn) failDirect() {
	c.mu.Lock()
	c.closing = true
	c.failed = true
	c.mu.Unlock()
	c.r.flushers.Go(c)
}

// pushFront puts what the socket did not take of a direct write (if
// anything) in front of whatever was queued meanwhile, so it goes out
// first; c.mu is held.
func (c *Conn) pushFront(rest outMsg) {
	if rest.data == nil {
		return
	}
	c.queue = append(c.queue, outMsg{})
	copy(c.queue[1:], c.queue)
	c.queue[0] = rest
	c.queued += len(rest.data)
}
