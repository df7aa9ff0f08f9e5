package master

import (
	"errors"
	"sync"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// PROCESS mode's per-connection credit. A WebSocket's messages are handed
// to its worker, which queues them per connection and handles them one at
// a time (worker/serial.go). Without a bound, a client sending faster than
// its OnMessage returns grows that queue without limit: the ipc pipe's own
// back-pressure never engages, because the worker's reader only files the
// events away. So the master counts, per connection, what it has sent to
// the worker and the worker has not yet handled (the worker returns credit
// with Credit frames as it handles them); past MaxPendingMessages or
// MaxSendBuffer bytes, the connection's read goroutine waits, reading that
// socket pauses, and TCP pushes back on the client. Nothing is dropped.
//
// The master keeps a copy of every message until the worker says it was
// handled: when the worker dies first, the copies go to its replacement
// (after OnResume), so a crash loses no message. A message whose OnMessage
// ran but whose credit had not yet reached the master when the worker died
// is handled twice (at least once, never lost).

// MaxPendingMessages bounds the messages of one connection sent to its
// worker and not yet handled there (bytes are bounded by --max-send-buffer).
const MaxPendingMessages = 256

// errStale means the process a sender was about to use is gone (or the
// server stops): pick again.
var errStale = errors.New("master: worker gone")

// wsFlow is one PROCESS-mode WebSocket's side of the credit: the process
// told of the connection and the messages sent to it and not yet handled.
// One sender at a time holds the connection's turn (its read goroutine, or
// attach handing the connection to a replacement), so the frames of a
// connection go out in order; the turn is held without the mutex while a
// frame is queued.
type wsFlow struct {
	mu    sync.Mutex
	cond  *sync.Cond
	p     *proc // told of the connection (Open or Resume); nil: none yet
	busy  bool  // a sender holds the turn
	sent  []pendingMsg
	bytes int
}

type pendingMsg struct {
	op int
	bp *[]byte
}

var pendPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func (b *procBackend) flowOf(c *reactor.Conn) *wsFlow {
	if v, ok := b.flows.Load(c.ID()); ok {
		return v.(*wsFlow)
	}
	f := &wsFlow{}
	f.cond = sync.NewCond(&f.mu)
	v, _ := b.flows.LoadOrStore(c.ID(), f)
	return v.(*wsFlow)
}

func (f *wsFlow) take() {
	f.mu.Lock()
	for f.busy {
		f.cond.Wait()
	}
	f.busy = true
	f.mu.Unlock()
}

func (f *wsFlow) release() {
	f.mu.Lock()
	f.busy = false
	f.cond.Broadcast()
	f.mu.Unlock()
}

// free returns the copies (the connection is gone).
func (f *wsFlow) free() {
	f.mu.Lock()
	for _, m := range f.sent {
		pendPool.Put(m.bp)
	}
	f.sent, f.bytes = nil, 0
	f.mu.Unlock()
}

func gone(p *proc) bool {
	select {
	case <-p.readEnd:
		return true
	default:
		return false
	}
}

// takeover makes p the process told of c (the caller holds the turn): a
// Resume, then every message the previous process was sent and never
// handled, when that process died. A previous process still alive (one
// being drained by a reload) handles what it was sent itself.
func (b *procBackend) takeover(c *reactor.Conn, f *wsFlow, p *proc) error {
	f.mu.Lock()
	if f.p == p {
		f.mu.Unlock()
		return nil
	}
	old := f.p
	if old != nil && !gone(old) {
		for _, m := range f.sent {
			pendPool.Put(m.bp)
		}
		f.sent, f.bytes = f.sent[:0], 0
	}
	redo := append([]pendingMsg(nil), f.sent...)
	f.p = p
	f.mu.Unlock()
	hs := ipc.AppendHandshake(nil, c.Handshake())
	if err := p.out.SendWait(&ipc.Header{Type: ipc.TypeResume, Conn: c.ID(), Code: uint16(c.Listener().Index)}, hs, nil); err != nil {
		return err
	}
	if len(redo) > 0 {
		b.m.log.Warn().Str("conn", reactor.FormatID(c.ID())).Int("worker", p.slot.id).Int("worker_pid", p.pid).
			Int("messages", len(redo)).Msg("redelivering messages a dead worker never handled")
	}
	for _, m := range redo {
		if err := p.out.SendWait(&ipc.Header{Type: ipc.TypeMessage, Conn: c.ID(), Flags: uint8(m.op)}, *m.bp, nil); err != nil {
			return err
		}
	}
	return nil
}

// waitCredit waits (holding the turn) until p may be sent n more bytes of
// c's messages; errStale when p goes away or the server stops meanwhile.
func (b *procBackend) waitCredit(f *wsFlow, p *proc, n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.sent) > 0 && (len(f.sent) >= MaxPendingMessages || f.bytes+n > b.maxPending) {
		if f.p != p || gone(p) || b.stopped.Load() {
			return errStale
		}
		f.cond.Wait()
	}
	if f.p != p {
		return errStale
	}
	return nil
}

// sendFast is Message's common case in one turn of the mutex: p is the
// process already told of the connection, no other sender holds the turn
// and there is credit. It keeps the copy, sends the frame holding the turn
// and reports true; false: take the slow path (takeover, waitCredit).
func (f *wsFlow) sendFast(p *proc, id uint64, op int, data []byte, maxPending int) bool {
	f.mu.Lock()
	if f.busy || f.p != p || (len(f.sent) > 0 && (len(f.sent) >= MaxPendingMessages || f.bytes+len(data) > maxPending)) {
		f.mu.Unlock()
		return false
	}
	f.busy = true
	bp := pendPool.Get().(*[]byte)
	*bp = append((*bp)[:0], data...)
	f.sent = append(f.sent, pendingMsg{op: op, bp: bp})
	f.bytes += len(data)
	f.mu.Unlock()
	p.out.SendWait(&ipc.Header{Type: ipc.TypeMessage, Conn: id, Flags: uint8(op)}, data, nil)
	f.release()
	return true
}

// keep records a copy of a message sent to f.p.
func (f *wsFlow) keep(op int, data []byte) {
	bp := pendPool.Get().(*[]byte)
	*bp = append((*bp)[:0], data...)
	f.mu.Lock()
	f.sent = append(f.sent, pendingMsg{op: op, bp: bp})
	f.bytes += len(data)
	f.mu.Unlock()
}

// credit applies a worker's Credit frame: n of conn's messages handled.
func (b *procBackend) credit(p *proc, fr ipc.Frame) {
	v, ok := b.flows.Load(fr.Conn)
	if !ok {
		return
	}
	f := v.(*wsFlow)
	f.mu.Lock()
	if f.p == p {
		n := min(int(fr.Arg), len(f.sent))
		for _, m := range f.sent[:n] {
			f.bytes -= len(*m.bp)
			if cap(*m.bp) <= 64<<10 {
				pendPool.Put(m.bp)
			}
		}
		f.sent = append(f.sent[:0], f.sent[n:]...)
		f.cond.Broadcast()
	}
	f.mu.Unlock()
}

// wakeFlows wakes every sender waiting on p's credit (p is gone), or on
// any process's (p nil: the server stops).
func (b *procBackend) wakeFlows(p *proc) {
	b.flows.Range(func(_, v any) bool {
		f := v.(*wsFlow)
		f.mu.Lock()
		if p == nil || f.p == p {
			f.cond.Broadcast()
		}
		f.mu.Unlock()
		return true
	})
}

// pending reports how many of its connections' messages p holds unhandled.
func (b *procBackend) pending(p *proc) (conns, msgs int) {
	b.flows.Range(func(_, v any) bool {
		f := v.(*wsFlow)
		f.mu.Lock()
		if f.p == p && len(f.sent) > 0 {
			conns++
			msgs += len(f.sent)
		}
		f.mu.Unlock()
		return true
	})
	return conns, msgs
}
