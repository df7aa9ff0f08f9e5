package master

import (
	"time"

	"github.com/forkd/forkd/ipc"
)

// Conn.Send without a round trip (PROCESS mode). A worker's Send frame is
// applied to the master's reactor in stream order, like any bus operation,
// but nothing is answered per frame: a failure comes back as a SendFailed
// frame (the connection and the exact outcome), and the successes as a
// count in a SendAck frame sent once the master has read everything the
// worker had written so far (so under load one SendAck covers many Sends,
// and an idle stream is never left with an unacknowledged one). A
// SendFlush asks for a Result once every earlier Send was applied: the
// worker's Conn.Flush, which then knows each earlier Send's outcome.
//
// The frames a worker sends are read by one goroutine (readProc), so the
// Sends, Pushes and Closes of a worker to one connection are applied in
// the order it sent them, and its close reply (the Close frame after
// OnClose) goes out after every Send its callbacks made.

// send applies one Send frame from p.
func (m *Master) send(p *proc, f ipc.Frame) {
	out := ipc.Unavailable
	if m.reactor != nil {
		out = m.reactor.Push(f.Conn, int(f.Flags), f.Payload)
	}
	if out == ipc.OK {
		p.sendOK.Add(1)
		return
	}
	p.out.SendWait(&ipc.Header{Type: ipc.TypeSendFailed, Conn: f.Conn, Code: uint16(out)}, nil, nil)
}

// The SendAck rides on the next frame to the worker (leadAck, ahead of the
// first frame of the master's next write to it) rather than going alone:
// alone, it was a pipe write that woke an idle worker for nothing but a
// count, once per batch the worker answered (a third of a worker's
// wake-ups in an echo load, see docs/BENCHMARKS.md). When no frame follows
// within ackDelay (the worker went quiet), ackLater's timer sends it.
const ackDelay = 10 * time.Millisecond

// leadAck is p.out's lead (ipc.Writer.SetLead): the successes counted so
// far, ahead of a new batch.
func (p *proc) leadAck(dst []byte) []byte {
	n := p.sendOK.Swap(0)
	if n == 0 {
		return dst
	}
	return ipc.AppendFrame(dst, &ipc.Header{Type: ipc.TypeSendAck, Arg: n}, nil, nil)
}

// ackLater makes sure the successes counted so far reach p within
// ackDelay even if nothing else is sent to it (readProc, when it has read
// everything p wrote). Once armed it is not pushed back: under a stream of
// Sends with nothing going to the worker (a timer's pushes) it would never
// fire. Under load it fires every ackDelay and mostly finds the count
// already gone ahead of a batch (leadAck).
func (m *Master) ackLater(p *proc) {
	if p.sendOK.Load() == 0 {
		return
	}
	if !p.ackArmed.CompareAndSwap(false, true) {
		return // armed: it fires within ackDelay of the first count it covers
	}
	if p.ackLater == nil {
		p.ackLater = time.AfterFunc(ackDelay, func() {
			p.ackArmed.Store(false)
			ackSends(p)
		})
		return
	}
	p.ackLater.Reset(ackDelay)
}

// ackSends tells p at once how many of its Sends succeeded since the last
// SendAck.
func ackSends(p *proc) {
	if n := p.sendOK.Swap(0); n > 0 {
		p.out.SendWait(&ipc.Header{Type: ipc.TypeSendAck, Arg: n}, nil, nil)
	}
}

// sendFlush answers a SendFlush: every earlier Send of p was applied (its
// failures are already queued to p, ahead of this Result).
func (m *Master) sendFlush(p *proc, f ipc.Frame) {
	ackSends(p)
	result(p, f, ipc.OK, 0, nil)
}
