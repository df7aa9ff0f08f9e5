package worker

import (
	"github.com/forkd/forkd/ipc"
)

// Conn.Send in PROCESS mode, without a round trip. The message goes to the
// master as a Send frame on this worker's batched ipc stream and Send
// returns at once: OK means the master will apply it, in order after
// everything this worker sent to the connection before. What only the
// master can know (the connection's send buffer is full, or it closed
// before the message reached it) comes back asynchronously:
//
//   - a SendFailed frame with the exact outcome, recorded on the
//     connection (the first one since the last Flush) and counted in the
//     pushes metric under its outcome;
//   - the successes as a count (SendAck), counted as outcome "ok";
//   - Flush waits for the outcome of every earlier Send: a SendFlush frame
//     the master answers once it has applied them all, so by then any
//     failure among them has been recorded, and Flush returns it.
//
// What this worker knows itself is still returned by Send at once: the
// message is over the ipc frame limit (TooLarge), or this worker's queue
// to the master is full (Unavailable: the same bound as every bus
// operation).
// Nothing waits, so the caller holds no timer and no channel.

// send hands a message for c to the master (PROCESS mode).
func (w *Worker) send(c *Conn, op int, data []byte) ipc.Outcome {
	// Not refused here once the close reached the callbacks: what OnClose
	// sends still goes out, before the close reply (the master holds that
	// reply until this worker's Close frame, which follows these Sends).
	err := w.out.Send(&ipc.Header{Type: ipc.TypeSend, Flags: uint8(op), Conn: c.id}, data, nil)
	if err == nil {
		return ipc.OK // counted when the master acknowledges it (sendAck)
	}
	out := ipc.Unavailable
	if err == ipc.ErrTooLarge {
		out = ipc.TooLarge
	}
	w.m.Push(uint16(out))
	return out
}

// flush waits until the master has applied every earlier Send of this
// worker and returns the first failure of c's not yet reported by Flush.
func (w *Worker) flush(c *Conn) ipc.Outcome {
	out, _, _ := w.call(ipc.Header{Type: ipc.TypeSendFlush, Conn: c.id}, nil, nil, 0)
	if failed := ipc.Outcome(c.failed.Swap(0)); failed != ipc.OK {
		return failed
	}
	return out // OK; Unavailable or Timeout: the outcomes are not known
}

// sendFailed records a Send the master could not apply (from the reader).
func (w *Worker) sendFailed(f ipc.Frame) {
	w.m.Push(f.Code)
	w.mu.Lock()
	c := w.conns[f.Conn]
	w.mu.Unlock()
	if c != nil {
		c.failed.CompareAndSwap(0, uint32(f.Code))
	}
	if f.Code != uint16(ipc.BufferFull) { // BufferFull has OnBufferFull
		w.log.Debug().Uint64("conn", f.Conn).Uint16("outcome", f.Code).Msg("send failed")
	}
}

// sendAck counts Sends the master applied (from the reader).
func (w *Worker) sendAck(f ipc.Frame) {
	w.m.Pushes[ipc.OK].Add(uint64(f.Arg))
}
