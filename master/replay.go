package master

import (
	"encoding/binary"
	"time"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// Paced recovery: a replay bigger than half a connection's send buffer
// (replayLimit) goes out a page at a time, each once the connection's
// send buffer has room for it, while what the room broadcasts meanwhile is
// recorded; the recorded messages after the replay's last seq follow, and
// the join, under the lock that orders the room's live messages here, so
// nothing is lost, nothing comes twice, and the send buffer stays bounded.
// A client that does not read for paceWait is sent a gap instead of the
// rest.

// paceWait bounds a paced recovery, and each page's wait for room.
const paceWait = 30 * time.Second

// replaySource is where a paced recovery gets its pages and records the
// room's live messages: this node's history (it owns the room) or the
// owner's over the cluster.
type replaySource interface {
	page(rc ipc.Recover, limit int) (ipc.RecoverResult, []entry, bool, ipc.Outcome)
	drain() []cluster.Cast
	// final runs fn under the lock that orders the room's live messages
	// here, with the last recorded ones; lost: the numbering was lost.
	final(fn func(casts []cluster.Cast, lost bool))
}

type localSource struct {
	m   *Master
	lg  *roomLog
	rec *recording
}

func (s localSource) page(rc ipc.Recover, limit int) (ipc.RecoverResult, []entry, bool, ipc.Outcome) {
	res, replay, more := s.m.hist.page(rc, limit)
	return res, replay, more, ipc.OK
}
func (s localSource) drain() []cluster.Cast                          { return s.lg.drain(s.rec) }
func (s localSource) final(fn func(casts []cluster.Cast, lost bool)) { s.lg.finish(s.rec, fn) }

// remoteSource pages from the room's owner; the room's live stripe
// records (recoverRemote).
type remoteSource struct {
	m     *Master
	owner int
	room  string
	rec   *recording
}

func (s remoteSource) page(rc ipc.Recover, limit int) (ipc.RecoverResult, []entry, bool, ipc.Outcome) {
	r := s.m.cluster.Call(s.owner, cluster.Op{Type: uint8(ipc.TypeRecover), Arg: uint32(max(limit, 1)), Data: rc.Append(nil)})
	if r.Outcome != ipc.OK {
		return ipc.RecoverResult{}, nil, false, r.Outcome
	}
	res, replay, more, ok := parsePage(r.Data)
	if !ok {
		return ipc.RecoverResult{}, nil, false, ipc.Failed
	}
	return res, replay, more, ipc.OK
}

func (s remoteSource) drain() []cluster.Cast {
	st := s.m.live.stripe(s.room)
	st.mu.Lock()
	defer st.mu.Unlock()
	c := s.rec.casts
	s.rec.casts = nil
	return c
}

func (s remoteSource) final(fn func(casts []cluster.Cast, lost bool)) {
	// What the owner numbered into the last page may still be queued here,
	// not yet recorded: once past the join it would come twice.
	if err := s.m.cluster.Settle(); err != nil {
		s.m.log.Warn().Err(err).Str("room", s.room).Msg("users: recovering before every received room message was handled; the connection may get one twice")
	}
	st := s.m.live.stripe(s.room)
	st.mu.Lock()
	defer st.mu.Unlock()
	rs := st.recs[s.room]
	for i, x := range rs {
		if x == s.rec {
			rs = append(rs[:i], rs[i+1:]...)
			break
		}
	}
	if len(rs) == 0 {
		delete(st.recs, s.room)
	} else {
		st.recs[s.room] = rs
	}
	c := s.rec.casts
	s.rec.casts = nil
	fn(c, false)
}

// appendPage encodes a page of a replay for another node: the result,
// more u8, then each message's seq u64, op u8, length u32 and data.
func appendPage(dst []byte, res ipc.RecoverResult, replay []entry, more bool) []byte {
	dst = res.Append(dst)
	if more {
		dst = append(dst, 1)
	} else {
		dst = append(dst, 0)
	}
	for _, e := range replay {
		dst = binary.LittleEndian.AppendUint64(dst, e.seq)
		dst = ipc.AppendReplayed(dst, e.op, e.data)
	}
	return dst
}

func parsePage(b []byte) (ipc.RecoverResult, []entry, bool, bool) {
	res, rest, ok := ipc.ParseRecoverResult(b)
	if !ok || len(rest) < 1 {
		return res, nil, false, false
	}
	more := rest[0] == 1
	rest = rest[1:]
	var replay []entry
	for len(rest) > 0 {
		if len(rest) < 8 {
			return res, nil, false, false
		}
		seq := binary.LittleEndian.Uint64(rest)
		op, data, next, ok := ipc.NextReplayed(rest[8:])
		if !ok {
			return res, nil, false, false
		}
		replay = append(replay, entry{seq: seq, op: op, data: data})
		rest = next
	}
	return res, replay, more, true
}

// pacedRecovery replays to f.Conn page by page from src, then what the
// room broadcast meanwhile, and joins it (deliverRecovery), then done.
// Run on its own goroutine.
func (m *Master) pacedRecovery(p *proc, f ipc.Frame, rc ipc.Recover, src replaySource, done func()) {
	limit := m.replayLimit()
	deadline := time.Now().Add(paceWait)
	since, epoch, has := rc.Since, rc.Epoch, rc.HasSince
	var pending []entry
	gapped, replayed := false, 0
	var res ipc.RecoverResult
	gap := func() {
		if !gapped {
			gapped = true
			pending = append(pending, entry{op: reactor.Text, data: GapMessage(rc.Room)})
		}
	}
	ok := true
	for {
		r, page, more, out := src.page(ipc.Recover{Room: rc.Room, Since: since, Epoch: epoch, HasSince: has}, limit)
		if out != ipc.OK {
			m.log.Warn().Str("room", rc.Room).Int("outcome", int(out)).Msg("users: room history owner did not answer; the recovering connection gets a gap")
			if has {
				gap()
			}
			break
		}
		if r.Gap {
			gap()
		}
		res = r
		pending = append(pending, page...)
		replayed += len(page)
		if len(page) > 0 {
			since = page[len(page)-1].seq
		} else {
			since = r.Seq
		}
		epoch, has = r.Epoch, true
		if !more {
			break
		}
		if ok = m.sendChunk(f.Conn, pending, deadline); !ok {
			break
		}
		pending = nil
	}
	add := func(casts []cluster.Cast) {
		for _, c := range casts {
			switch {
			case epoch != 0 && c.Epoch != epoch: // the owner changed meanwhile
				gap()
				since, epoch = c.Seq, c.Epoch
			case c.Seq > since:
				since = c.Seq
			default:
				continue // replayed already
			}
			pending = append(pending, entry{seq: c.Seq, op: c.Flags, data: c.Data})
			replayed++
		}
	}
	// While the room's live messages outrun the client, they are paced too.
	for ok && time.Now().Before(deadline) {
		add(src.drain())
		if replaySize(pending) <= limit {
			break
		}
		if ok = m.sendChunk(f.Conn, pending, deadline); ok {
			pending = nil
		}
	}
	if !ok || !time.Now().Before(deadline) {
		pending, gapped = nil, false
		gap()
		m.log.Warn().Str("room", rc.Room).Str("conn", reactor.FormatID(f.Conn)).Msg("users: a recovering connection did not take its replay in time; it gets a gap")
	}
	src.final(func(casts []cluster.Cast, lost bool) {
		if lost {
			gap()
		}
		add(casts)
		res.Gap, res.Seq, res.Epoch, res.Replayed = gapped, since, epoch, uint32(replayed)
		m.deliverRecovery(p, f, rc.Room, res, pending, done)
	})
}

// sendChunk sends a page of a replay to connection id once its send
// buffer has room for it, and returns once the buffer has drained to
// half (room for the next page); false when the connection is gone or
// did not drain by deadline.
func (m *Master) sendChunk(id uint64, chunk []entry, deadline time.Time) bool {
	if r := m.reactor; r != nil {
		size := replaySize(chunk)
		if !waitQueued(r, id, m.opts.MaxSendBuffer-size, deadline) {
			return false
		}
		for _, e := range chunk {
			if r.Push(id, int(e.op), e.data) != ipc.OK {
				return false
			}
		}
		return waitQueued(r, id, m.opts.MaxSendBuffer/2, deadline)
	}
	owner := int(reactor.Owner(id))
	dst := (*proc)(nil)
	if owner < m.opts.Workers {
		dst = m.current(owner)
	}
	if dst == nil {
		return false
	}
	payload := ipc.RecoverResult{}.Append(ipc.AppendRoom(nil, ""))
	for _, e := range chunk {
		payload = ipc.AppendReplayed(payload, e.op, e.data)
	}
	answer := make(chan ipc.Outcome, 1)
	dst.mu.Lock()
	seq := dst.nextSeq()
	dst.routes[seq] = route{on: func(r ipc.Frame, gone bool) {
		if gone {
			answer <- ipc.NoConnection
			return
		}
		answer <- ipc.Outcome(r.Code)
	}}
	dst.mu.Unlock()
	if err := dst.out.Send(&ipc.Header{Type: ipc.TypeRecover, Flags: ipc.RecoverChunk, Conn: id, Seq: seq}, payload, nil); err != nil {
		routed(dst, dst.routes, seq)
		return false
	}
	select {
	case out := <-answer:
		return out == ipc.OK
	case <-time.After(time.Until(deadline) + time.Second):
		routed(dst, dst.routes, seq)
		return false
	}
}

// waitQueued waits until connection id has at most n bytes queued.
func waitQueued(r *reactor.Reactor, id uint64, n int, deadline time.Time) bool {
	for {
		c := r.Conn(id)
		if c == nil {
			return false
		}
		if c.QueuedBytes() <= max(n, 0) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}
