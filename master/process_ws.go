package master

import (
	"hash/maphash"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// PROCESS mode's WebSockets: the master's reactor holds each connection,
// binds it to a worker slot for its life, and hands its events (Open,
// Message, Close, buffer full/drain) to the worker serving that slot.

// slotFor binds a new WebSocket to a worker slot, for its whole life (so
// its messages keep their order): the dispatch mode's choice, or the next
// slot that has a worker when that one has none (dead, or unresponsive).
func (b *procBackend) slotFor(c *reactor.Conn) int {
	id := b.slotChoice(c)
	n := len(b.serving)
	for i := 0; i < n; i++ {
		if b.serving[(id+i)%n].Load() != nil {
			return (id + i) % n
		}
	}
	return id
}

func (b *procBackend) slotChoice(c *reactor.Conn) int {
	n := len(b.serving)
	switch b.m.dispatch {
	case DispatchRoundRobin:
		return int(b.rr.Add(1) % uint32(n))
	case DispatchIP:
		host := c.Handshake().Remote
		if i := lastColon(host); i > 0 {
			host = host[:i]
		}
		return int(maphash.Bytes(b.seed, host) % uint64(n))
	case DispatchIdle:
		if p := b.idlest(); p != nil {
			return p.slot.id
		}
	}
	return int(c.ID() % uint64(n))
}

func lastColon(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ':' {
			return i
		}
	}
	return -1
}

// servingWait returns the process serving slot id, waiting while it has
// none (a crashed worker being replaced): reading that connection pauses.
func (b *procBackend) servingWait(id int) *proc {
	if p := b.serving[id].Load(); p != nil {
		return p
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if p := b.serving[id].Load(); p != nil {
			return p
		}
		if b.m.reactor.Draining() || b.m.isStopping() {
			return nil
		}
		b.cond.Wait()
	}
}

func (b *procBackend) Open(c *reactor.Conn) {
	id := b.slotFor(c)
	c.Slot.Store(int32(id))
	f := b.flowOf(c)
	f.take()
	defer f.release()
	p := b.servingEnter(id)
	if p == nil {
		return // the replacement will be told with Resume
	}
	hs := ipc.AppendHandshake(nil, c.Handshake())
	err := p.out.SendWait(&ipc.Header{Type: ipc.TypeOpen, Conn: c.ID(), Code: uint16(c.Listener().Index)}, hs, nil)
	p.leave()
	if err == nil {
		f.mu.Lock()
		if f.p == nil {
			f.p = p
		}
		f.mu.Unlock()
	}
}

// servingEnter returns the process serving slot id with its gate entered
// (see proc.enter), or nil when there is none.
func (b *procBackend) servingEnter(id int) *proc {
	for {
		p := b.serving[id].Load()
		if p == nil || p.enter() {
			return p
		}
	}
}

func (b *procBackend) Message(c *reactor.Conn, op int, data []byte) {
	f := b.flowOf(c)
	for {
		p := b.servingWait(int(c.Slot.Load()))
		if p == nil {
			return
		}
		if !p.enter() {
			continue // being drained, and detached already: its replacement serves
		}
		if f.sendFast(p, c.ID(), op, data, b.maxPending) {
			p.leave()
			return
		}
		// The connection's credit gate: waiting here pauses reading this
		// connection (TCP back-pressure) until its worker catches up.
		f.take()
		err := b.takeover(c, f, p)
		if err == nil {
			err = b.waitCredit(f, p, len(data))
		}
		if err == nil {
			// Kept until the worker says it handled the message: if it dies
			// first, its replacement gets it (takeover). So once kept, the
			// message is delivered whatever the send below says.
			f.keep(op, data)
			p.out.SendWait(&ipc.Header{Type: ipc.TypeMessage, Conn: c.ID(), Flags: uint8(op)}, data, nil)
			f.release()
			p.leave()
			return
		}
		f.release()
		p.leave()
		if b.stopped.Load() {
			return
		}
		b.detach(p) // its stream broke: wait for the replacement
	}
}

// Close tells the worker serving c, after everything c sent before it:
// a worker that died with messages of c unhandled has them redelivered to
// its replacement first, which this waits for. When the peer's close
// waits for our reply, the worker sends it (a Close frame after OnClose):
// it then follows whatever the worker sent for the messages before the
// peer's close, which may still be in its queue.
func (b *procBackend) Close(c *reactor.Conn, code int, reason string) {
	f := b.flowOf(c)
	defer func() {
		b.flows.Delete(c.ID())
		f.free()
	}()
	deferred := c.DeferCloseReply()
	for {
		p := b.servingWait(int(c.Slot.Load()))
		if p == nil {
			if deferred {
				c.CloseWith(reactor.EchoCode(code), "") // no worker will answer
			}
			return
		}
		if !p.enter() {
			continue
		}
		f.take()
		err := b.takeover(c, f, p)
		if err == nil {
			h := ipc.Header{Type: ipc.TypeClosed, Conn: c.ID(), Code: uint16(code)}
			if deferred {
				h.Flags = ipc.ClosedReply
			}
			err = p.out.SendWait(&h, []byte(reason), nil)
		}
		f.release()
		p.leave()
		if err == nil {
			return
		}
		if b.stopped.Load() {
			if deferred {
				c.CloseWith(reactor.EchoCode(code), "")
			}
			return
		}
		b.detach(p)
	}
}

// BufferFull and BufferDrain tell the worker serving the connection, which
// runs OnBufferFull / OnBufferDrain in order with the connection's other
// callbacks; the pusher also gets ipc.BufferFull as its outcome.
func (b *procBackend) BufferFull(c *reactor.Conn)  { b.bufferEvent(c, 1) }
func (b *procBackend) BufferDrain(c *reactor.Conn) { b.bufferEvent(c, 0) }

func (b *procBackend) bufferEvent(c *reactor.Conn, code uint16) {
	var p *proc
	if id := int(c.Slot.Load()); id >= 0 && id < len(b.serving) {
		p = b.serving[id].Load()
	}
	if p != nil {
		p.out.Send(&ipc.Header{Type: ipc.TypeBuffer, Conn: c.ID(), Code: code}, nil, nil)
	}
}

// RoomChanged: the master's reactor holds every room itself; a cluster
// listens to the room while it has members here.
func (b *procBackend) RoomChanged(room string, n int) { b.m.roomChanged(room, n) }
