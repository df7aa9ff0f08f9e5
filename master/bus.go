package master

import (
	"encoding/json"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// The two local buses (the Bus seam, mode.go): PROCESS mode applies a
// worker's bus operation to the master's reactor, which holds every
// connection; BASE mode routes it to the worker that owns the connection
// (by the id's owner) or, for a room, to every worker holding members.

// busProcess applies a bus operation to the master's reactor (PROCESS).
func (m *Master) busProcess(p *proc, f ipc.Frame) {
	r := m.reactor
	switch f.Type {
	case ipc.TypePush:
		result(p, f, r.Push(f.Conn, int(f.Flags), f.Payload), 0, nil)
	case ipc.TypeClose:
		result(p, f, r.CloseConn(f.Conn, int(f.Code), string(f.Payload)), 0, nil)
	case ipc.TypeQuery:
		c := r.Conn(f.Conn)
		if c == nil {
			result(p, f, ipc.NoConnection, 0, nil)
			return
		}
		b, _ := json.Marshal(c.Info(int(c.Slot.Load())))
		result(p, f, ipc.OK, 0, b)
	case ipc.TypeJoin:
		result(p, f, r.Join(f.Conn, string(f.Payload)), 0, nil)
	case ipc.TypeLeave:
		result(p, f, r.Leave(f.Conn, string(f.Payload)), 0, nil)
	case ipc.TypeBroadcast:
		b, ok := ipc.ParseBroadcast(f.Flags, f.Payload)
		if !ok {
			result(p, f, ipc.Failed, 0, nil)
			return
		}
		// Members reached (queued to) and skipped (buffer full, closing),
		// and the number the master gave the message (users.go).
		reached, skipped := r.BroadcastExcept(b.Room, int(f.Flags&^ipc.BroadcastExt), b.Data, f.Conn, b.Exclude)
		if m.cluster != nil {
			m.clusterBroadcast(p, f, b.Room, b.Data, reached, skipped)
			return
		}
		result(p, f, ipc.OK, uint32(reached), ipc.BroadcastResult{Skipped: uint32(skipped), Seq: b.Seq, Epoch: b.Epoch}.Append(nil))
	case ipc.TypeUID:
		result(p, f, r.BindUID(f.Conn, string(f.Payload)), 0, nil)
	case ipc.TypeSession:
		out, b := r.Session(f.Conn, f.Flags, f.Payload)
		result(p, f, out, 0, b)
	case ipc.TypeCount:
		if m.cluster != nil {
			m.clusterCount(p, f, string(f.Payload), r.Count(string(f.Payload)))
			return
		}
		result(p, f, ipc.OK, uint32(r.Count(string(f.Payload))), nil)
	}
}

// busBase routes a bus operation to the worker that owns the connection
// (the owner is encoded in the id: no lookup, no broadcast to find it).
func (m *Master) busBase(p *proc, f ipc.Frame) {
	switch f.Type {
	case ipc.TypeJoin:
		if f.Flags == ipc.JoinCount { // a worker's new local member count
			room := string(f.Payload)
			m.rooms.set(room, p, int32(f.Arg))
			if m.cluster != nil {
				_, total := m.rooms.holders(room)
				m.roomChanged(room, total)
			}
			result(p, f, ipc.OK, 0, nil) // when it waits (seq != 0)
			return
		}
	case ipc.TypeBroadcast:
		b, ok := ipc.ParseBroadcast(f.Flags, f.Payload)
		if !ok {
			result(p, f, ipc.Failed, 0, nil)
			return
		}
		m.broadcastBase(p, f, b.Room, ipc.BroadcastResult{Seq: b.Seq, Epoch: b.Epoch})
		return
	case ipc.TypeCount:
		_, total := m.rooms.holders(string(f.Payload))
		if m.cluster != nil {
			m.clusterCount(p, f, string(f.Payload), total)
			return
		}
		result(p, f, ipc.OK, uint32(total), nil)
		return
	}
	owner := int(reactor.Owner(f.Conn))
	// Node 0 or this node's number: here (another node's id reached this
	// bus only without a cluster, and names no connection here).
	if n := int(reactor.Node(f.Conn)); owner >= m.opts.Workers || (n != 0 && n != m.node()) || f.Conn > reactor.MaxID {
		result(p, f, ipc.NoConnection, 0, nil)
		return
	}
	h := f.Header
	h.Arg = uint32(p.slot.id) + 1
	dst := m.current(owner)
	if dst == nil {
		result(p, f, ipc.NoConnection, 0, nil)
		return
	}
	if f.Seq != 0 {
		dst.mu.Lock()
		h.Seq = dst.nextSeq()
		dst.routes[h.Seq] = route{origin: p, seq: f.Seq}
		dst.mu.Unlock()
	}
	if err := dst.out.Send(&h, f.Payload, nil); err != nil {
		if f.Seq != 0 {
			routed(dst, dst.routes, h.Seq)
		}
		result(p, f, ipc.BufferFull, 0, nil)
	}
}
