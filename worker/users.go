package worker

import (
	"encoding/json"
	"time"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// The worker's side of users, sessions, member lists and history. A uid is
// a room of its own (reactor.UIDRoom): binding joins it, a push to the uid
// is a broadcast to it (one bus hop per process holding its connections),
// and a closing connection leaves it like every room.

// Published is what an extended broadcast did.
type Published struct {
	Reached, Skipped int
	Seq              uint64 // the message's number in its room (0: a uid's room)
	Epoch            uint32 // the room's epoch
}

// Publish broadcasts data to room, skipping except and every id in
// exclude; stamp writes "seq" and "epoch" into data (a JSON object) at the
// history owner.
func (w *Worker) Publish(room string, op int, data []byte, except uint64, exclude []uint64, stamp bool) (Published, ipc.Outcome) {
	var opts uint8
	if stamp {
		opts = ipc.BroadcastStamp
	}
	head := ipc.AppendBroadcastExt(make([]byte, 0, 20+len(room)+8*len(exclude)), room, exclude, opts, 0, 0)
	w.m.Broadcasts.Add(1)
	out, n, res := w.call(ipc.Header{Type: ipc.TypeBroadcast, Flags: uint8(op) | ipc.BroadcastExt, Conn: except}, head, data, 0)
	r := ipc.ParseBroadcastResult(res)
	return Published{Reached: int(n), Skipped: int(r.Skipped), Seq: r.Seq, Epoch: r.Epoch}, out
}

// BindUID binds connection id to uid ("" unbinds), wherever it is held.
func (w *Worker) BindUID(id uint64, uid string) ipc.Outcome {
	if w.local(id) {
		out := w.r.BindUID(id, uid)
		// Leaving the old uid's room reports its new count without
		// waiting when it is 0 (see baseHandler.RoomChanged): a call after
		// it, on the same stream, returns once the master has applied it,
		// so UIDOnline from any worker agrees as soon as this returns. (A
		// bind routed here from another worker needs none: the answer
		// follows the report through the master.)
		w.Count(reactor.UIDRoom(uid))
		return out
	}
	out, _, _ := w.call(ipc.Header{Type: ipc.TypeUID, Conn: id}, []byte(uid), nil, 0)
	return out
}

// Session applies a session operation to connection id, wherever it is
// held, and returns the session (JSON object).
func (w *Worker) Session(id uint64, op uint8, payload []byte) ([]byte, ipc.Outcome) {
	if len(payload) > ipc.MaxSession {
		return nil, ipc.TooLarge
	}
	if w.local(id) {
		out, b := w.r.Session(id, op, payload)
		return b, out
	}
	out, _, b := w.call(ipc.Header{Type: ipc.TypeSession, Flags: op, Conn: id}, payload, nil, 0)
	return b, out
}

// Members returns a page of room's members (ids above after, at most
// limit), wherever they are held, and the cluster nodes that did not
// answer in time.
func (w *Worker) Members(room string, after uint64, limit int) ([]ipc.Member, []int, ipc.Outcome) {
	q := ipc.MembersQuery{Room: room, After: after, Limit: uint32(limit)}
	out, _, b := w.call(ipc.Header{Type: ipc.TypeMembers}, q.Append(nil), nil, 0)
	if out != ipc.OK {
		return nil, nil, out
	}
	var pg ipc.MembersPage
	if err := json.Unmarshal(b, &pg); err != nil {
		return nil, nil, ipc.Failed
	}
	return pg.Members, pg.Missing, ipc.OK
}

// CountNodes is Count, with the cluster nodes that did not answer in
// time (their members are not counted).
func (w *Worker) CountNodes(room string) (int, []int, ipc.Outcome) {
	out, n, b := w.call(ipc.Header{Type: ipc.TypeCount}, []byte(room), nil, 0)
	return int(n), ipc.ParseMissing(b), out
}

// Recover joins connection id to a room through the history owner,
// replaying first what it missed after rc.Since.
func (w *Worker) Recover(id uint64, rc ipc.Recover) (ipc.RecoverResult, ipc.Outcome) {
	out, _, b := w.call(ipc.Header{Type: ipc.TypeRecover, Conn: id}, rc.Append(nil), nil, 0)
	res, _, ok := ipc.ParseRecoverResult(b)
	if out == ipc.OK && !ok {
		return res, ipc.Failed
	}
	return res, out
}

// SetHistory sets room's history limits at the history owner.
func (w *Worker) SetHistory(room string, max int, ttl time.Duration) ipc.Outcome {
	h := ipc.History{Room: room, Max: uint32(max), TTLMillis: uint64(ttl / time.Millisecond)}
	out, _, _ := w.call(ipc.Header{Type: ipc.TypeHistory}, h.Append(nil), nil, 0)
	return out
}

// serveUsers (BASE mode) applies a users operation the master routed here.
func (w *Worker) serveUsers(f ipc.Frame) {
	switch f.Type {
	case ipc.TypeUID:
		// Off the read loop, as Join: binding joins the uid's room, which
		// waits for the master to have the new count.
		uid := string(f.Payload)
		go func() { w.reply(f, w.r.BindUID(f.Conn, uid), 0, nil) }()
	case ipc.TypeSession:
		out, b := w.r.Session(f.Conn, f.Flags, f.Payload)
		w.reply(f, out, 0, b)
	case ipc.TypeMembers:
		q, ok := ipc.ParseMembersQuery(f.Payload)
		if !ok {
			w.reply(f, ipc.Failed, 0, nil)
			return
		}
		b, _ := json.Marshal(w.r.Members(q))
		w.reply(f, ipc.OK, 0, b)
	case ipc.TypeRecover:
		w.replay(f)
	}
}

// replay (BASE) sends a recovering connection what it missed and joins it
// to the room, here on the read loop: the room's broadcasts the master
// queued after the replay come after it. The new count goes to the master
// without waiting for an answer; the master counts this process as a
// holder of the room until the reply, which follows the count.
func (w *Worker) replay(f ipc.Frame) {
	if f.Flags&ipc.RecoverChunk != 0 {
		payload := append([]byte(nil), f.Payload...)
		go w.replayChunk(f, payload)
		return
	}
	room, rest, ok := ipc.CutRoom(f.Payload)
	var head []byte
	if ok && len(rest) >= ipc.RecoverResultSize {
		head = rest[:ipc.RecoverResultSize]
	}
	_, msgs, ok2 := ipc.ParseRecoverResult(rest)
	if !ok || !ok2 {
		w.reply(f, ipc.Failed, 0, nil)
		return
	}
	out := ipc.OK
	for len(msgs) > 0 {
		op, data, next, ok := ipc.NextReplayed(msgs)
		if !ok {
			out = ipc.Failed
			break
		}
		if o := w.r.Push(f.Conn, int(op), data); o != ipc.OK && out == ipc.OK {
			out = o
		}
		msgs = next
	}
	if o := w.r.JoinQuiet(f.Conn, room); o != ipc.OK {
		out = o
	}
	// The count report takes the reactor's report lock, which a goroutine
	// waiting for the master's answer to its own report (an answer that
	// comes through this loop) may hold: report from a goroutine, then
	// answer, in that order on the stream.
	head = append([]byte(nil), head...)
	go func() {
		w.r.ReportRoom(room, func(n int) {
			w.out.SendWait(&ipc.Header{Type: ipc.TypeJoin, Flags: ipc.JoinCount, Arg: uint32(n)}, []byte(room), nil)
		})
		w.reply(f, out, 0, head)
	}()
}

// replayChunk (BASE) pushes one page of a paced replay once the
// connection's send buffer has room for it, and answers once it has
// drained to half (room for the next page), within replayWait.
func (w *Worker) replayChunk(f ipc.Frame, payload []byte) {
	_, rest, ok := ipc.CutRoom(payload)
	_, msgs, ok2 := ipc.ParseRecoverResult(rest)
	if !ok || !ok2 {
		w.reply(f, ipc.Failed, 0, nil)
		return
	}
	size := 0
	for p := msgs; len(p) > 0; {
		_, data, next, ok := ipc.NextReplayed(p)
		if !ok {
			w.reply(f, ipc.Failed, 0, nil)
			return
		}
		size += len(data) + 16
		p = next
	}
	deadline := time.Now().Add(replayWait)
	max := w.cfg.MaxSendBuffer
	if max <= 0 {
		max = 1 << 20
	}
	if out := w.waitQueued(f.Conn, max-size, deadline); out != ipc.OK {
		w.reply(f, out, 0, nil)
		return
	}
	for len(msgs) > 0 {
		op, data, next, _ := ipc.NextReplayed(msgs)
		if out := w.r.Push(f.Conn, int(op), data); out != ipc.OK {
			w.reply(f, out, 0, nil)
			return
		}
		msgs = next
	}
	w.reply(f, w.waitQueued(f.Conn, max/2, deadline), 0, nil)
}

// replayWait bounds one page of a paced replay.
const replayWait = 30 * time.Second

// waitQueued waits until connection id has at most n bytes queued.
func (w *Worker) waitQueued(id uint64, n int, deadline time.Time) ipc.Outcome {
	for {
		c := w.r.Conn(id)
		if c == nil {
			return ipc.NoConnection
		}
		if c.QueuedBytes() <= n || n < 0 && c.QueuedBytes() == 0 {
			return ipc.OK
		}
		if time.Now().After(deadline) {
			return ipc.BufferFull
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// UIDRoom is the room holding uid's connections.
func UIDRoom(uid string) string { return reactor.UIDRoom(uid) }
