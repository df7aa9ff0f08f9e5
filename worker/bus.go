package worker

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// calls are this worker's outstanding requests to the master (and through
// it to other workers), keyed by seq.
type calls struct {
	mu  sync.Mutex
	seq uint32
	m   map[uint32]*call
}

type call struct {
	done    chan struct{}
	timer   *time.Timer // the call's timeout, reused with the call
	outcome ipc.Outcome
	arg     uint32
	data    []byte
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

func (cs *calls) add() (uint32, *call) {
	cl := callPool.Get().(*call)
	cl.data = cl.data[:0]
	cs.mu.Lock()
	cs.seq++
	if cs.seq == 0 {
		cs.seq = 1
	}
	seq := cs.seq
	cs.m[seq] = cl
	cs.mu.Unlock()
	return seq, cl
}

func (cs *calls) remove(seq uint32) bool {
	cs.mu.Lock()
	_, ok := cs.m[seq]
	delete(cs.m, seq)
	cs.mu.Unlock()
	return ok
}

func (cs *calls) finish(f ipc.Frame) {
	cs.mu.Lock()
	cl := cs.m[f.Seq]
	delete(cs.m, f.Seq)
	cs.mu.Unlock()
	if cl == nil {
		return // timed out already
	}
	cl.outcome = ipc.Outcome(f.Code)
	cl.arg = f.Arg
	cl.data = append(cl.data[:0], f.Payload...)
	cl.done <- struct{}{}
}

// call sends h (with a fresh seq) and waits for its Result. The bus is
// bounded: when this worker's queue to the master is full the call fails
// at once with Unavailable instead of growing memory.
func (w *Worker) call(h ipc.Header, a, b []byte, timeout time.Duration) (ipc.Outcome, uint32, []byte) {
	seq, cl := w.calls.add()
	h.Seq = seq
	if err := w.out.Send(&h, a, b); err != nil {
		w.calls.remove(seq)
		callPool.Put(cl)
		if err == ipc.ErrTooLarge {
			return ipc.TooLarge, 0, nil
		}
		return ipc.Unavailable, 0, nil
	}
	if timeout <= 0 {
		timeout = w.cfg.CallTimeout
	}
	// The timer lives with the pooled call (a new one per call was a tenth
	// of a PROCESS-mode echo's worker CPU); Stop and Reset leave no stale
	// tick behind (Go 1.23 timers).
	if cl.timer == nil {
		cl.timer = time.NewTimer(timeout)
	} else {
		cl.timer.Reset(timeout)
	}
	select {
	case <-cl.done:
		cl.timer.Stop()
		out, arg := cl.outcome, cl.arg
		var data []byte
		if len(cl.data) > 0 {
			data = append([]byte(nil), cl.data...)
		}
		callPool.Put(cl)
		return out, arg, data
	case <-cl.timer.C:
		if !w.calls.remove(seq) {
			<-cl.done // the result raced the timer: take it, keep the call clean
			callPool.Put(cl)
		}
		return ipc.Timeout, 0, nil
	}
}

// local reports whether connection id is held by this worker's reactor.
func (w *Worker) local(id uint64) bool {
	if w.r == nil || int(reactor.Owner(id)) != w.cfg.Slot {
		return false
	}
	// Node 0: an id issued before this server joined its cluster (or of a
	// single server) is this server's.
	n := int(reactor.Node(id))
	return n == 0 || n == int(w.node.Load())
}

// setNode takes the cluster node number the master learnt when it joined.
func (w *Worker) setNode(n int) {
	w.node.Store(int32(n))
	if w.r != nil {
		w.r.SetNode(uint16(n))
	}
}

// Push sends a message to any connection, wherever it is held.
func (w *Worker) Push(id uint64, op int, data []byte) ipc.Outcome {
	if w.local(id) {
		out := w.r.Push(id, op, data)
		w.m.Push(uint16(out))
		return out
	}
	out, _, _ := w.call(ipc.Header{Type: ipc.TypePush, Flags: uint8(op), Conn: id}, data, nil, 0)
	w.m.Push(uint16(out))
	return out
}

// CloseConn closes any connection, wherever it is held.
func (w *Worker) CloseConn(id uint64, code int, reason string) ipc.Outcome {
	if w.local(id) {
		return w.r.CloseConn(id, code, reason)
	}
	out, _, _ := w.call(ipc.Header{Type: ipc.TypeClose, Conn: id, Code: uint16(code)}, []byte(reason), nil, 0)
	return out
}

// Info asks about any connection; Outcome NoConnection when it is gone.
func (w *Worker) Info(id uint64) (reactor.Info, ipc.Outcome) {
	var info reactor.Info
	if w.local(id) {
		c := w.r.Conn(id)
		if c == nil {
			return info, ipc.NoConnection
		}
		return c.Info(w.cfg.Slot), ipc.OK
	}
	out, _, data := w.call(ipc.Header{Type: ipc.TypeQuery, Conn: id}, nil, nil, 0)
	if out == ipc.OK {
		if err := json.Unmarshal(data, &info); err != nil {
			return info, ipc.Failed
		}
	}
	return info, out
}

// Join puts connection id into room.
func (w *Worker) Join(id uint64, room string) ipc.Outcome {
	if w.local(id) {
		return w.r.Join(id, room)
	}
	out, _, _ := w.call(ipc.Header{Type: ipc.TypeJoin, Conn: id}, []byte(room), nil, 0)
	return out
}

// Leave takes connection id out of room.
func (w *Worker) Leave(id uint64, room string) ipc.Outcome {
	if w.local(id) {
		return w.r.Leave(id, room)
	}
	out, _, _ := w.call(ipc.Header{Type: ipc.TypeLeave, Conn: id}, []byte(room), nil, 0)
	return out
}

// Broadcast sends data to every member of room except one connection (0:
// none). The master fans it out: one frame per process holding members.
// It returns how many members it was queued to (reached) and how many it
// was not (skipped: their send buffer was full, or they were closing).
func (w *Worker) Broadcast(room string, op int, data []byte, except uint64) (reached, skipped int, out ipc.Outcome) {
	p, out := w.Publish(room, op, data, except, nil, false)
	return p.Reached, p.Skipped, out
}

// SkippedOf reads a Broadcast Result's payload (ipc.SkippedOf).
func SkippedOf(p []byte) int { return ipc.SkippedOf(p) }

// AppendSkipped encodes a Broadcast Result's payload (ipc.AppendSkipped).
func AppendSkipped(dst []byte, skipped int) []byte { return ipc.AppendSkipped(dst, skipped) }

// Count returns the number of members of room across all workers.
func (w *Worker) Count(room string) (int, ipc.Outcome) {
	out, n, _ := w.call(ipc.Header{Type: ipc.TypeCount}, []byte(room), nil, 0)
	return int(n), out
}

// SendMessage sends a pipe message to worker to (Swoole's sendMessage);
// OK once it is queued to that worker.
func (w *Worker) SendMessage(to int, data []byte) ipc.Outcome {
	out, _, _ := w.call(ipc.Header{Type: ipc.TypePipe, Arg: uint32(to), Code: uint16(w.cfg.Slot)}, data, nil, 0)
	if out == ipc.OK {
		w.m.PipeSent.Add(1)
	}
	return out
}

// SendMessageNode sends a pipe message to worker to of cluster node node
// (0: this server); OK once that node queued it to the worker.
func (w *Worker) SendMessageNode(node, to int, data []byte) ipc.Outcome {
	if node == 0 || node == int(w.node.Load()) {
		return w.SendMessage(to, data)
	}
	out, _, _ := w.call(ipc.Header{Type: ipc.TypePipe, Arg: uint32(to), Code: uint16(w.cfg.Slot), Conn: uint64(node)}, data, nil, 0)
	if out == ipc.OK {
		w.m.PipeSent.Add(1)
	}
	return out
}

// Node returns this server's cluster node number (0: not in a cluster, or
// not joined yet).
func (w *Worker) Node() int { return int(w.node.Load()) }

// serveBus (BASE mode) applies an operation another worker routed here
// through the master, and answers it.
func (w *Worker) serveBus(f ipc.Frame) {
	if w.r == nil {
		w.reply(f, ipc.Unavailable, 0, nil)
		return
	}
	switch f.Type {
	case ipc.TypePush:
		w.reply(f, w.r.Push(f.Conn, int(f.Flags), f.Payload), 0, nil)
	case ipc.TypeClose:
		w.reply(f, w.r.CloseConn(f.Conn, int(f.Code), string(f.Payload)), 0, nil)
	case ipc.TypeQuery:
		c := w.r.Conn(f.Conn)
		if c == nil {
			w.reply(f, ipc.NoConnection, 0, nil)
			return
		}
		b, _ := json.Marshal(c.Info(w.cfg.Slot))
		w.reply(f, ipc.OK, 0, b)
	case ipc.TypeJoin, ipc.TypeLeave:
		// Off the read loop: a join reports the room's new count to the
		// master and waits for it (see baseHandler.RoomChanged), and the
		// answer comes through this loop. The caller waits for this reply
		// before its next operation, so its operations stay in order.
		room := string(f.Payload)
		go func() {
			if f.Type == ipc.TypeJoin {
				w.reply(f, w.r.Join(f.Conn, room), 0, nil)
			} else {
				w.reply(f, w.r.Leave(f.Conn, room), 0, nil)
			}
		}()
	case ipc.TypeBroadcast:
		// Routed by the master, which adds up every holder's answer.
		b, ok := ipc.ParseBroadcast(f.Flags, f.Payload)
		if !ok {
			w.reply(f, ipc.Failed, 0, nil)
			return
		}
		reached, skipped := w.r.BroadcastExcept(b.Room, int(f.Flags&^ipc.BroadcastExt), b.Data, f.Conn, b.Exclude)
		w.reply(f, ipc.OK, uint32(reached), AppendSkipped(nil, skipped))
	default:
		w.serveUsers(f)
	}
}

// SplitRoom splits a broadcast payload into room and data (ipc.SplitRoom).
func SplitRoom(p []byte) (string, []byte, bool) { return ipc.SplitRoom(p) }

func (w *Worker) reply(f ipc.Frame, out ipc.Outcome, arg uint32, data []byte) {
	if f.Seq == 0 {
		return
	}
	// Arg routes the result back to the origin worker; it carries it through.
	if arg == 0 {
		arg = f.Arg
	}
	w.out.SendWait(&ipc.Header{Type: ipc.TypeResult, Seq: f.Seq, Code: uint16(out), Arg: arg}, data, nil)
}

// leaseIDs asks the master for a new connection-id sequence lease (BASE
// mode: this worker's reactor has used up its current one).
func (w *Worker) leaseIDs() (uint64, error) {
	out, _, data := w.call(ipc.Header{Type: ipc.TypeIDLease}, nil, nil, 0)
	if out != ipc.OK || len(data) != 8 {
		return 0, fmt.Errorf("worker: id lease: outcome %d", out)
	}
	return binary.LittleEndian.Uint64(data), nil
}
