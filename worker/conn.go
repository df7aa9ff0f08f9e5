package worker

import (
	"bytes"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// Conn is a WebSocket connection as a worker sees it, in either mode. In
// BASE mode it is held by this worker's reactor; in PROCESS mode by the
// master's, and its events arrive over ipc.
type Conn struct {
	id       uint64
	w        *Worker
	listener int
	hs       ipc.Handshake // owned copies
	rc       *reactor.Conn // BASE mode
	closed   atomic.Bool
	failed   atomic.Uint32 // PROCESS: the first Send outcome the master reported failed since the last Flush (send.go)

	// Ext is the root package's handle for this connection.
	Ext any

	// PROCESS mode: the connection's events, handled one at a time in order.
	events serial[event]
}

type event struct {
	typ  ipc.Type
	op   int
	code int
	bp   *[]byte
}

// ID returns the connection id.
func (c *Conn) ID() uint64 { return c.id }

// Worker returns the worker serving the connection.
func (c *Conn) Worker() *Worker { return c.w }

// Listener returns the index of the listener that accepted the connection.
func (c *Conn) Listener() int { return c.listener }

// Handshake returns the original upgrade request.
func (c *Conn) Handshake() *ipc.Handshake { return &c.hs }

// Send queues a message to this connection. In BASE mode the outcome is
// final; in PROCESS mode it is what this worker knows at once, and a
// failure only the master knows is reported later (send.go, Flush).
func (c *Conn) Send(op int, data []byte) ipc.Outcome {
	if c.rc != nil {
		out := c.rc.Send(op, data)
		c.w.m.Push(uint16(out)) // a push in PROCESS mode (below): counted alike
		return out
	}
	return c.w.send(c, op, data)
}

// Flush waits for the outcome of every earlier Send to this connection and
// returns the first failure not yet reported (OK: none). In BASE mode
// every outcome is known when Send returns, so it returns OK at once.
func (c *Conn) Flush() ipc.Outcome {
	if c.rc != nil {
		return ipc.OK
	}
	return c.w.flush(c)
}

// Close closes the connection with a close code and reason.
func (c *Conn) Close(code int, reason string) ipc.Outcome {
	if c.rc != nil {
		return c.rc.CloseWith(code, reason)
	}
	return c.w.CloseConn(c.id, code, reason)
}

// Header returns the value of an upgrade request header (case-insensitive).
func (c *Conn) Header(name string) string {
	for _, line := range bytes.Split(c.hs.Header, []byte("\r\n")) {
		i := bytes.IndexByte(line, ':')
		if i > 0 && bytes.EqualFold(bytes.TrimSpace(line[:i]), []byte(name)) {
			return string(bytes.TrimSpace(line[i+1:]))
		}
	}
	return ""
}

var evPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// connEvent (PROCESS mode) files an event from the master under its
// connection and makes sure one goroutine is working through them.
func (w *Worker) connEvent(f ipc.Frame) {
	var c *Conn
	switch f.Type {
	case ipc.TypeOpen, ipc.TypeResume:
		hs, err := ipc.ParseHandshake(f.Payload)
		if err != nil {
			w.log.Error().Err(err).Msg("bad handshake frame")
			return
		}
		c = &Conn{id: f.Conn, w: w, listener: int(f.Code)}
		c.hs = ipc.Handshake{
			Remote: bytes.Clone(hs.Remote), URI: bytes.Clone(hs.URI),
			Header: bytes.Clone(hs.Header), Since: hs.Since,
		}
		w.mu.Lock()
		if w.conns[c.id] != nil {
			// Told twice (a Resume racing a slot change): once is enough.
			w.mu.Unlock()
			return
		}
		w.conns[c.id] = c
		w.mu.Unlock()
	default:
		w.mu.Lock()
		c = w.conns[f.Conn]
		w.mu.Unlock()
		if c == nil {
			w.log.Debug().Uint64("conn", f.Conn).Uint8("type", uint8(f.Type)).Msg("event for unknown connection")
			if f.Type == ipc.TypeMessage {
				w.credit(f.Conn, 1) // the master counts it until told
			}
			return
		}
	}
	ev := event{typ: f.Type, op: int(f.Flags), code: int(f.Code)}
	if f.Type == ipc.TypeMessage || f.Type == ipc.TypeClosed { // the message, or the close reason
		ev.bp = evPool.Get().(*[]byte)
		*ev.bp = append((*ev.bp)[:0], f.Payload...)
	}
	w.inflight.Add(1)
	if c.events.add(ev) {
		w.spawn(job{c: c})
	}
}

func (c *Conn) run() {
	var batch []event
	for {
		var ok bool
		if batch, ok = c.events.take(batch); !ok {
			return
		}
		handled := 0
		// One clock read per event: an event's handling ends where the
		// next one's begins (dispatch returns when it ended).
		t := mono()
		for i := range batch {
			t = c.w.dispatch(c, &batch[i], t)
			if batch[i].typ == ipc.TypeMessage {
				// Credit goes back as messages are handled: every few within
				// a long batch, the rest when the batch is done.
				if handled++; handled == creditEvery {
					c.w.credit(c.id, handled)
					handled = 0
				}
			}
			if bp := batch[i].bp; bp != nil && cap(*bp) <= 64<<10 {
				evPool.Put(bp)
			}
			batch[i].bp = nil
			c.w.inflight.Done()
		}
		if handled > 0 {
			c.w.credit(c.id, handled)
		}
	}
}

// creditEvery is how many handled messages a Credit frame reports at most.
const creditEvery = 16

// credit tells the master (PROCESS mode) that n of connection id's
// messages were handled, so it may send that many more (see master's
// credit.go): the bound on a connection's queued events here. When the
// last frame still queued to the master is this connection's Send (an
// echo: the callback's answer), the credit rides on it (SendCredit): the
// same two frames in the same order, one header fewer to write and read.
func (w *Worker) credit(id uint64, n int) {
	if w.out.Fold(id, ipc.TypeSend, ipc.TypeSendCredit, uint32(n)) {
		return
	}
	w.out.SendWait(&ipc.Header{Type: ipc.TypeCredit, Conn: id, Arg: uint32(n)}, nil, nil)
}

// dispatch runs one event's callback; t0 is when it began, and it returns
// when it ended (a clock read only for a message, whose latency is counted).
func (w *Worker) dispatch(c *Conn, ev *event, t0 time.Duration) time.Duration {
	switch ev.typ {
	case ipc.TypeOpen:
		w.guard(c, "OnOpen", func() { w.app.Open(c) })
	case ipc.TypeResume:
		w.guard(c, "OnResume", func() { w.app.Resume(c) })
	case ipc.TypeMessage:
		w.counted()
		if c.closed.Load() {
			return t0
		}
		w.guard(c, "OnMessage", func() { w.app.Message(c, ev.op, *ev.bp) })
		t1 := mono()
		w.m.MessageLatency.Observe(t1 - t0)
		return t1
	case ipc.TypeBuffer:
		if ev.code == 1 {
			w.guard(nil, "OnBufferFull", func() { w.app.BufferFull(c) })
		} else {
			w.guard(nil, "OnBufferDrain", func() { w.app.BufferDrain(c) })
		}
	case ipc.TypeClosed:
		c.closed.Store(true)
		w.guard(nil, "OnClose", func() { w.app.Close(c, ev.code, string(*ev.bp)) })
		w.mu.Lock()
		delete(w.conns, c.id)
		w.mu.Unlock()
		if uint8(ev.op)&ipc.ClosedReply != 0 {
			// The master's reply to the peer's close, after everything
			// this connection's callbacks sent (Push waits for its Result).
			w.out.Send(&ipc.Header{Type: ipc.TypeClose, Conn: c.id, Code: uint16(reactor.EchoCode(ev.code))}, nil, nil)
		}
	}
	return mono()
}

// monoEpoch and mono read the monotonic clock alone: time.Now reads the
// wall clock too, a second system clock read per call.
var monoEpoch = time.Now()

func mono() time.Duration { return time.Since(monoEpoch) }

// guard runs a user callback; a panic is logged with its stack and closes
// only the connection it was about (1011), never the process.
func (w *Worker) guard(c *Conn, where string, f func()) {
	defer func() {
		if p := recover(); p != nil {
			ev := w.log.Error().Str("in", where).Str("stack", stack())
			if c != nil {
				ev = ev.Str("conn", reactor.FormatID(c.id))
			}
			ev.Msgf("panic: %v", p)
			if c != nil {
				c.Close(closeInternal, "internal error")
			}
		}
	}()
	f()
}
