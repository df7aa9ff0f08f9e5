package master

import (
	"encoding/json"
	"hash/fnv"
	"sync"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// Users across the nodes of a cluster (docs/cluster.md, "Users and room
// history"). A room's history has one owner among the nodes up
// (cluster.Node.Owner): every broadcast to the room, from whichever node,
// is numbered, kept and published by the owner, so a seq means the same
// message on every node. Another node forwards its broadcasts to the
// owner, delivers the owner's messages to its members one at a time under
// the room's live lock, and recovers a connection by fetching the replay
// from the owner while it records the live messages that arrive
// meanwhile, then sends the replay, the recorded ones after it (by seq: no
// duplicate) and joins the connection, under that lock (no gap).

// historyOwner returns the node owning room's history when it is another
// node (0: this one, or no cluster, or a uid's room, which keeps none).
func (m *Master) historyOwner(room string) int { return remoteOwner(m.cluster, room) }

func remoteOwner(n *cluster.Node, room string) int {
	if n == nil || reactor.IsUIDRoom(room) {
		return 0
	}
	if o := n.Owner(room); o != 0 && o != n.Number() {
		return o
	}
	return 0
}

// forwardBroadcast sends a worker's broadcast to the room's owner, which
// numbers it, delivers it on every node and answers the cluster-wide
// count, the seq and the epoch. One the caller does not wait for is sent
// without a request, in order with this node's others to that owner.
func (m *Master) forwardBroadcast(p *proc, f ipc.Frame, owner int) {
	op := cluster.Op{Type: uint8(ipc.TypeBroadcast), Flags: f.Flags, Conn: f.Conn, Data: append([]byte(nil), f.Payload...)}
	if f.Seq == 0 {
		m.cluster.Send(owner, op)
		return
	}
	seq := f.Seq
	go func() {
		r := m.cluster.Call(owner, op)
		p.out.SendWait(&ipc.Header{Type: ipc.TypeResult, Seq: seq, Code: uint16(r.Outcome), Arg: r.Arg}, r.Data, nil)
	}()
}

// ownerBroadcast numbers, keeps and delivers a broadcast another node
// forwarded here (the owner), publishes it to the other nodes with its
// number, and answers the cluster-wide count.
func (m *Master) ownerBroadcast(n *cluster.Node, f ipc.Frame, answer func(ipc.Outcome, uint32, []byte)) {
	b, ok := ipc.ParseBroadcast(f.Flags|ipc.BroadcastExt, f.Payload)
	if !ok || f.Flags&ipc.BroadcastExt == 0 {
		answer(ipc.Failed, 0, nil)
		return
	}
	op := f.Flags &^ ipc.BroadcastExt
	var reached, skipped int
	seq, epoch := m.hist.publish(b.Room, op, b.Data, b.Options&ipc.BroadcastStamp != 0, func(data []byte, seq uint64, epoch uint32) {
		reached, skipped = m.fanLocal(b.Room, op, data, f.Conn, b.Exclude, seq, epoch)
		n.Publish(b.Room, cluster.Cast{Flags: op, Except: f.Conn, Exclude: b.Exclude, Seq: seq, Epoch: epoch, Data: data})
	})
	res := ipc.BroadcastResult{Skipped: uint32(skipped), Seq: seq, Epoch: epoch}.Append(nil)
	go func() { answer(ipc.OK, uint32(reached+n.CountRemoteInCall(b.Room)), res) }()
}

// fanLocal delivers a room message to the members on this server and
// returns those reached and skipped (BASE: the members of the processes it
// was queued to, as counted; each process skips the excluded itself).
func (m *Master) fanLocal(room string, op uint8, data []byte, except uint64, exclude []uint64, seq uint64, epoch uint32) (int, int) {
	if r := m.reactor; r != nil {
		return r.BroadcastExcept(room, int(op), data, except, exclude)
	}
	holders, total := m.rooms.holders(room)
	if len(holders) == 0 {
		return 0, 0
	}
	payload := ipc.AppendBroadcastExt(make([]byte, 0, 20+len(room)+8*len(exclude)+len(data)), room, exclude, 0, seq, epoch)
	payload = append(payload, data...)
	skipped := 0
	for _, h := range holders {
		if h.out.Send(&ipc.Header{Type: ipc.TypeBroadcast, Flags: op | ipc.BroadcastExt, Conn: except}, payload, nil) != nil {
			skipped += m.rooms.count(room, h)
		}
	}
	return total - skipped, skipped
}

// live orders the room messages other nodes send here, and records them
// for the connections recovering meanwhile. Striped by room.
type live struct {
	stripes [64]liveStripe
}

type liveStripe struct {
	mu   sync.Mutex
	recs map[string][]*recording
}

// recording is what reached a room while a connection's replay was being
// fetched.
type recording struct{ casts []cluster.Cast }

func (l *live) stripe(room string) *liveStripe {
	h := fnv.New32a()
	h.Write([]byte(room))
	return &l.stripes[h.Sum32()%uint32(len(l.stripes))]
}

// remoteCast delivers another node's room message here.
func (m *Master) remoteCast(room string, c cluster.Cast) {
	st := m.live.stripe(room)
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, r := range st.recs[room] {
		r.casts = append(r.casts, c)
	}
	m.fanLocal(room, c.Flags, c.Data, c.Except, c.Exclude, c.Seq, c.Epoch)
}

// recoverRemote recovers a connection in a room another node owns: listen
// to the room and record what arrives, fetch the replay from the owner
// (page by page when it is bigger than a send buffer takes), then under
// the room's live lock send the rest of the replay and the recorded
// messages after it, and join (pacedRecovery). An owner that cannot be
// reached is a gap.
func (m *Master) recoverRemote(p *proc, f ipc.Frame, rc ipc.Recover, owner int) {
	go func() { // not on the worker's read loop: listening waits for NATS
		release, err := m.cluster.HoldRoom(rc.Room)
		if err != nil {
			result(p, f, ipc.Unavailable, 0, nil)
			return
		}
		rec := &recording{}
		st := m.live.stripe(rc.Room)
		st.mu.Lock()
		if st.recs == nil {
			st.recs = make(map[string][]*recording)
		}
		st.recs[rc.Room] = append(st.recs[rc.Room], rec)
		st.mu.Unlock()
		m.pacedRecovery(p, f, rc, remoteSource{m: m, owner: owner, room: rc.Room, rec: rec}, release)
	}()
}

// applyUsers runs a users operation another node sent here; false when op
// is not one.
func (m *Master) applyUsers(f ipc.Frame, answer func(ipc.Outcome, uint32, []byte)) bool {
	n := m.clusterJoined.Load()
	switch f.Type {
	case ipc.TypeBroadcast, ipc.TypeRecover, ipc.TypeHistory, ipc.TypeMembers:
		if n == nil { // still starting
			answer(ipc.Unavailable, 0, nil)
			return true
		}
	default:
		return false
	}
	switch f.Type {
	case ipc.TypeBroadcast:
		m.ownerBroadcast(n, f, answer)
	case ipc.TypeRecover:
		rc, ok := ipc.ParseRecover(f.Payload)
		if !ok || reactor.IsUIDRoom(rc.Room) {
			answer(ipc.Failed, 0, nil)
			return true
		}
		// One page, within the asker's bound and NATS's max payload.
		limit := min(int(f.Arg), n.MaxPayload()-4096)
		res, replay, more := m.hist.page(rc, limit)
		answer(ipc.OK, 0, appendPage(nil, res, replay, more))
	case ipc.TypeHistory:
		l, ok := ipc.ParseHistory(f.Payload)
		if !ok || reactor.IsUIDRoom(l.Room) {
			answer(ipc.Failed, 0, nil)
			return true
		}
		m.hist.setLimits(l)
		answer(ipc.OK, 0, nil)
	case ipc.TypeMembers:
		q, ok := ipc.ParseMembersQuery(f.Payload)
		if !ok {
			answer(ipc.Failed, 0, nil)
			return true
		}
		m.localMembers(q, f.Payload, func(ms []ipc.Member) {
			b, _ := json.Marshal(ms)
			answer(ipc.OK, 0, b)
		})
	}
	return true
}

// clusterMembers gathers a page of room's members from this server and
// every other node (one request each, at once, within --cluster-timeout)
// and gives done the first q.Limit by id, and the nodes that did not
// answer.
func (m *Master) clusterMembers(q ipc.MembersQuery, payload []byte, done func(ipc.MembersPage)) {
	local := make(chan []ipc.Member, 1)
	m.localMembers(q, payload, func(ms []ipc.Member) { local <- ms })
	op := cluster.Op{Type: uint8(ipc.TypeMembers), Data: append([]byte(nil), payload...)}
	go func() {
		res, missing := m.cluster.CallAll(op)
		all := <-local
		for n, r := range res {
			var ms []ipc.Member
			if json.Unmarshal(r.Data, &ms) != nil {
				missing = append(missing, n)
				continue
			}
			all = append(all, ms...)
		}
		done(ipc.MembersPage{Members: firstMembers(all, int(q.Limit)), Missing: missing})
	}()
}

// PeersChanged drops the history of the rooms another node owns now.
func (l clusterLocal) PeersChanged(n *cluster.Node) {
	l.m.hist.dropNotOwned(func(room string) bool { return remoteOwner(n, room) == 0 })
}
