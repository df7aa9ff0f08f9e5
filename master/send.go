package master

import (
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
		p.sendOK++
		return
	}
	p.out.SendWait(&ipc.Header{Type: ipc.TypeSendFailed, Conn: f.Conn, Code: uint16(out)}, nil, nil)
}

// ackSends tells p how many of its Sends succeeded since the last SendAck.
// readProc calls it when it has nothing more of p's buffered.
func (m *Master) ackSends(p *proc) {
	if p.sendOK == 0 {
		return
	}
	p.out.SendWait(&ipc.Header{Type: ipc.TypeSendAck, Arg: p.sendOK}, nil, nil)
	p.sendOK = 0
}

// sendFlush answers a SendFlush: every earlier Send of p was applied (its
// failures are already queued to p, ahead of this Result).
func (m *Master) sendFlush(p *proc, f ipc.Frame) {
	m.ackSends(p)
	result(p, f, ipc.OK, 0, nil)
}
