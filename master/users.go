package master

import (
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// The users layer on the master's side of the bus: broadcasts numbered and
// kept (history.go), recoveries, member lists, and uid and session
// operations. In PROCESS mode the master's reactor holds every connection
// and applies them; in BASE mode the hub routes them: uid and session
// operations to the owner in the connection id, member lists to every
// process holding members, replays to the owner in order with the room's
// broadcasts.

func (m *Master) initUsers() {
	m.hist.max = m.opts.RoomHistory
	m.hist.ttl = m.opts.RoomHistoryTTL
	m.hist.members = func(room string) bool {
		if m.reactor != nil {
			return m.reactor.Count(room) > 0
		}
		hs, _ := m.rooms.holders(room)
		return len(hs) > 0
	}
}

// usersFrame handles Broadcast (numbered here, then routed through the
// bus), Members, Recover and History. UID and Session go through the bus
// like a Push (to the connection's owner).
func (m *Master) usersFrame(p *proc, f ipc.Frame) {
	switch f.Type {
	case ipc.TypeBroadcast:
		m.publish(p, f)
	case ipc.TypeMembers:
		m.members(p, f)
	case ipc.TypeRecover:
		m.recoverConn(p, f)
	case ipc.TypeHistory:
		l, ok := ipc.ParseHistory(f.Payload)
		if !ok || reactor.IsUIDRoom(l.Room) {
			result(p, f, ipc.Failed, 0, nil)
			return
		}
		if owner := m.historyOwner(l.Room); owner != 0 {
			m.hist.storeLimits(l) // for when this node owns the room
			m.clusterCall(p, f, owner)
			return
		}
		m.hist.setLimits(l)
		result(p, f, ipc.OK, 0, nil)
	}
}

// publish numbers, stamps and keeps a broadcast, and routes it through the
// bus, which fans it out and answers the caller with the members reached
// and skipped and, carried in the frame, the message's seq and the room's
// epoch. All under the room's lock: a replay to a recovering connection
// (recoverConn) is ordered with the room's broadcasts.
func (m *Master) publish(p *proc, f ipc.Frame) {
	b, ok := ipc.ParseBroadcast(f.Flags, f.Payload)
	if !ok {
		result(p, f, ipc.Failed, 0, nil)
		return
	}
	if owner := m.historyOwner(b.Room); owner != 0 {
		m.forwardBroadcast(p, f, owner)
		return
	}
	op := f.Flags &^ ipc.BroadcastExt
	stamp := b.Options&ipc.BroadcastStamp != 0
	m.hist.publish(b.Room, op, b.Data, stamp, func(data []byte, seq uint64, epoch uint32) {
		payload := ipc.AppendBroadcastExt(make([]byte, 0, 20+len(b.Room)+8*len(b.Exclude)+len(data)), b.Room, b.Exclude, 0, seq, epoch)
		fwd := f
		fwd.Flags, fwd.Payload = op|ipc.BroadcastExt, append(payload, data...)
		m.bus.Route(p, fwd)
	})
}

// recoverConn joins a connection to a room, replaying what it missed
// first (see history.recover; in a cluster, from the room's owner).
func (m *Master) recoverConn(p *proc, f ipc.Frame) {
	rc, ok := ipc.ParseRecover(f.Payload)
	if !ok || reactor.IsUIDRoom(rc.Room) {
		result(p, f, ipc.Failed, 0, nil)
		return
	}
	if m.reactor != nil && m.reactor.Conn(f.Conn) == nil {
		result(p, f, ipc.NoConnection, 0, nil)
		return
	}
	if owner := m.historyOwner(rc.Room); owner != 0 {
		m.recoverRemote(p, f, rc, owner)
		return
	}
	m.hist.recover(rc, m.replayLimit(), func(res ipc.RecoverResult, replay []entry) {
		m.deliverRecovery(p, f, rc.Room, res, withGap(res.Gap, rc.Room, replay), nil)
	}, func(lg *roomLog, rec *recording) {
		go m.pacedRecovery(p, f, rc, localSource{m: m, lg: lg, rec: rec}, nil)
	})
}

// withGap puts the gap notice before replay when gap is set.
func withGap(gap bool, room string, replay []entry) []entry {
	if !gap {
		return replay
	}
	return append([]entry{{op: reactor.Text, data: GapMessage(room)}}, replay...)
}

// replayLimit is the most a replay sends a connection at once: half its
// send buffer (the rest is for the live messages that follow it).
func (m *Master) replayLimit() int {
	if m.opts.MaxSendBuffer > 0 {
		return m.opts.MaxSendBuffer / 2
	}
	return 1 << 19
}

// deliverRecovery sends connection f.Conn the replay (the gap notice in
// it, withGap), joins it to room and answers p, then calls done
// (nil: none) once the join is in place. The caller holds the lock that
// orders room's live messages here (the history's, or the live stripe's
// on a node that does not own the room), so they all come after.
func (m *Master) deliverRecovery(p *proc, f ipc.Frame, room string, res ipc.RecoverResult, replay []entry, done func()) {
	if done == nil {
		done = func() {}
	}
	if r := m.reactor; r != nil {
		out := ipc.OK
		for _, e := range replay {
			if o := r.Push(f.Conn, int(e.op), e.data); o != ipc.OK && out == ipc.OK {
				out = o
			}
		}
		if o := r.Join(f.Conn, room); o != ipc.OK {
			out = o
		}
		done()
		result(p, f, out, 0, res.Append(nil))
		return
	}
	// BASE: the owner gets the replay and joins the connection itself, on
	// its ipc read loop, before any broadcast queued after it; the room
	// counts it as a holder until it has reported its own count.
	owner := int(reactor.Owner(f.Conn))
	dst := (*proc)(nil)
	if owner < m.opts.Workers {
		dst = m.current(owner)
	}
	if dst == nil {
		done()
		result(p, f, ipc.NoConnection, 0, nil)
		return
	}
	origin, oseq := p, f.Seq
	payload := res.Append(ipc.AppendRoom(nil, room))
	for _, e := range replay {
		payload = ipc.AppendReplayed(payload, e.op, e.data)
	}
	m.rooms.pend(room, dst, 1)
	dst.mu.Lock()
	seq := dst.nextSeq()
	dst.routes[seq] = route{on: func(r ipc.Frame, gone bool) {
		m.rooms.pend(room, dst, -1)
		done()
		if gone {
			result(origin, ipc.Frame{Header: ipc.Header{Seq: oseq}}, ipc.NoConnection, 0, nil)
			return
		}
		origin.out.Send(&ipc.Header{Type: ipc.TypeResult, Seq: oseq, Code: r.Code}, r.Payload, nil)
	}}
	dst.mu.Unlock()
	if err := dst.out.Send(&ipc.Header{Type: ipc.TypeRecover, Conn: f.Conn, Seq: seq}, payload, nil); err != nil {
		routed(dst, dst.routes, seq)
		m.rooms.pend(room, dst, -1)
		done()
		result(origin, ipc.Frame{Header: ipc.Header{Seq: oseq}}, ipc.BufferFull, 0, nil)
	}
}

// members answers a page of a room's members: this server's, and in a
// cluster every other node's too (clusterMembers).
func (m *Master) members(p *proc, f ipc.Frame) {
	q, ok := ipc.ParseMembersQuery(f.Payload)
	if !ok {
		result(p, f, ipc.Failed, 0, nil)
		return
	}
	answer := func(pg ipc.MembersPage) {
		b, _ := json.Marshal(pg)
		result(p, f, ipc.OK, 0, b)
	}
	if m.cluster != nil && m.cluster.Number() != 0 {
		m.clusterMembers(q, f.Payload, answer)
		return
	}
	m.localMembers(q, f.Payload, func(ms []ipc.Member) { answer(ipc.MembersPage{Members: ms}) })
}

// localMembers gives done a page of room's members on this server: from
// the master's reactor, or (BASE) gathered from every process holding
// members.
func (m *Master) localMembers(q ipc.MembersQuery, payload []byte, done func([]ipc.Member)) {
	if m.reactor != nil {
		done(m.reactor.Members(q))
		return
	}
	holders, _ := m.rooms.holders(q.Room)
	g := &memberGather{left: len(holders), limit: int(q.Limit), done: done}
	if len(holders) == 0 {
		g.finish()
		return
	}
	g.mu.Lock()
	g.timer = time.AfterFunc(broadcastWait, g.finish)
	g.mu.Unlock()
	for _, h := range holders {
		h.mu.Lock()
		seq := h.nextSeq()
		h.routes[seq] = route{on: func(r ipc.Frame, gone bool) {
			var ms []ipc.Member
			if !gone && ipc.Outcome(r.Code) == ipc.OK {
				json.Unmarshal(r.Payload, &ms)
			}
			g.add(ms)
		}}
		h.mu.Unlock()
		if err := h.out.Send(&ipc.Header{Type: ipc.TypeMembers, Seq: seq}, payload, nil); err != nil {
			routed(h, h.routes, seq)
			g.add(nil)
		}
	}
}

// memberGather adds up the pages of a room's members its holders sent,
// and gives done the first limit of them, by id.
type memberGather struct {
	mu       sync.Mutex
	left     int
	members  []ipc.Member
	limit    int
	finished bool
	done     func([]ipc.Member)
	timer    *time.Timer
}

func (g *memberGather) add(ms []ipc.Member) {
	g.mu.Lock()
	if g.finished {
		g.mu.Unlock()
		return
	}
	g.members = append(g.members, ms...)
	g.left--
	last := g.left <= 0
	g.mu.Unlock()
	if last {
		g.finish()
	}
}

func (g *memberGather) finish() {
	g.mu.Lock()
	if g.finished {
		g.mu.Unlock()
		return
	}
	g.finished = true
	if g.timer != nil {
		g.timer.Stop()
	}
	ms := g.members
	g.mu.Unlock()
	g.done(firstMembers(ms, g.limit))
}

// firstMembers sorts ms by connection id and keeps the first limit (0:
// all): ids start with their node, so a page runs node by node.
func firstMembers(ms []ipc.Member, limit int) []ipc.Member {
	slices.SortFunc(ms, func(a, b ipc.Member) int {
		switch {
		case a.Conn < b.Conn:
			return -1
		case a.Conn > b.Conn:
			return 1
		}
		return 0
	})
	if limit > 0 && len(ms) > limit {
		ms = ms[:limit]
	}
	if ms == nil {
		ms = []ipc.Member{}
	}
	return ms
}

// pend counts a replay on its way to p (BASE): until p has joined the
// connection and reported its count, p is a holder of room.
func (rc *roomCounts) pend(room string, p *proc, d int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.pending == nil {
		rc.pending = make(map[string]map[*proc]int)
	}
	set := rc.pending[room]
	if set == nil {
		set = make(map[*proc]int)
		rc.pending[room] = set
	}
	set[p] += d
	if set[p] <= 0 {
		delete(set, p)
		if len(set) == 0 {
			delete(rc.pending, room)
		}
	}
}
