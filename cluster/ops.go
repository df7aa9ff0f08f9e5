package cluster

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/forkd/forkd/ipc"
)

// Operations on another node's connections (one request to the holder's
// node), room traffic and counts, and connection listings: what the
// master asks of the cluster once a node has joined (see cluster.go).

// onOp runs an operation another node sent here.
func (n *Node) onOp(m *nats.Msg) {
	op, err := decodeOp(m.Data)
	if err != nil {
		m.Respond((&Result{Outcome: ipc.Failed}).encode())
		return
	}
	switch op.Type {
	case opPing:
		m.Respond((&Result{Outcome: ipc.OK, Data: []byte(n.cfg.Name)}).encode())
	case opConns:
		// Gathering a page asks every BASE worker: not on the handler that
		// delivers pushes (conns.go).
		go n.answerConns(m, op)
	default:
		// The data stays valid: nats.go hands each message its own buffer.
		n.local.Apply(op, func(r Result) {
			if m.Reply != "" {
				m.Respond(r.encode())
			}
		})
	}
}

// Call runs op on node num and returns its outcome within the bound:
// Unavailable when the node is gone, NATS is down, or no answer came.
func (n *Node) Call(num int, op Op) Result {
	r := n.call(num, op)
	n.calls[int(r.Outcome)%len(n.calls)].Add(1)
	return r
}

// Calls returns how many calls ended with each outcome (index: ipc.Outcome).
func (n *Node) Calls() []uint64 {
	out := make([]uint64, len(n.calls))
	for i := range n.calls {
		out[i] = n.calls[i].Load()
	}
	return out
}

// Broadcasts returns how many room messages this node published.
func (n *Node) Broadcasts() uint64 { return n.casts.Load() }

func (n *Node) call(num int, op Op) Result {
	if num < 1 || num > MaxNode || !n.Connected() {
		return Result{Outcome: ipc.Unavailable}
	}
	select {
	case n.inflight <- struct{}{}:
	default:
		n.dropped.Add(1)
		return Result{Outcome: ipc.BufferFull}
	}
	defer func() { <-n.inflight }()
	msg, err := n.nc.Request(subjNode+strconv.Itoa(num), op.encode(), n.cfg.Timeout)
	if err != nil {
		return Result{Outcome: ipc.Unavailable}
	}
	r, err := decodeResult(msg.Data)
	if err != nil {
		return Result{Outcome: ipc.Failed}
	}
	return r
}

// Settle waits until every message this node had received from NATS
// when it was called has been handled, within the bound (a barrier through
// every asynchronous subscription). A recovery from another node's history
// settles after the owner's last page: the owner published each message it
// numbered into that page before it answered, on the same connection, so
// once settled every one of them has been recorded here and none can still
// reach the recovering connection live after its join.
func (n *Node) Settle() error {
	done := make(chan struct{})
	if err := n.nc.Barrier(func() { close(done) }); err != nil {
		return fmt.Errorf("cluster: settle: %w", err)
	}
	t := time.NewTimer(n.cfg.Timeout)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return fmt.Errorf("cluster: settle: the room messages received were not handled within %s", n.cfg.Timeout)
	}
}

// Publish sends a room message to the other nodes with members of room
// (false when NATS is down: the message reached no other node).
func (n *Node) Publish(room string, c Cast) bool {
	if !n.Connected() {
		return false
	}
	n.casts.Add(1)
	return n.nc.Publish(subjRoom+enc(room), encodeCast(c)) == nil
}

// RoomCount tells the cluster this node's member count of room: the node
// listens to the room while it has members (or holds it, HoldRoom), and
// only then.
func (n *Node) RoomCount(room string, members int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if members > 0 {
		n.members[room] = true
	} else {
		delete(n.members, room)
	}
	n.syncRoomLocked(room)
}

// HoldRoom keeps this node listening to room, members or not, until
// release is called; when it returns the NATS server has the
// subscription, so every message published on room from then on reaches
// this node (a recovering connection's node records them while it fetches
// the replay).
func (n *Node) HoldRoom(room string) (release func(), err error) {
	n.mu.Lock()
	n.holds[room]++
	n.syncRoomLocked(room)
	n.mu.Unlock()
	release = func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.holds[room]--; n.holds[room] <= 0 {
			delete(n.holds, room)
		}
		n.syncRoomLocked(room)
	}
	if err := n.nc.FlushTimeout(n.cfg.Timeout); err != nil {
		release()
		return nil, fmt.Errorf("cluster: listen to room: %w", err)
	}
	return release, nil
}

func (n *Node) syncRoomLocked(room string) {
	want := n.members[room] || n.holds[room] > 0
	sub := n.rooms[room]
	switch {
	case want && sub == nil:
		s, err := n.nc.Subscribe(subjRoom+enc(room), func(m *nats.Msg) {
			if c, err := decodeCast(m.Data); err == nil {
				n.local.Broadcast(room, c)
			}
		})
		if err != nil {
			n.log.Warn().Err(err).Str("room", room).Msg("cluster: room subscription failed")
			return
		}
		s.SetPendingLimits(1<<16, 64<<20)
		n.rooms[room] = s
	case !want && sub != nil:
		sub.Unsubscribe()
		delete(n.rooms, room)
	}
}

// Rooms returns how many rooms this node listens to.
func (n *Node) Rooms() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.rooms)
}

func (n *Node) onCount(m *nats.Msg) {
	if m.Reply == "" || n.num.Load() == 0 {
		return
	}
	c := n.local.Count(string(m.Data))
	// "COUNT NODE": the asker knows who answered (and who did not).
	b := strconv.AppendInt(nil, int64(c), 10)
	b = append(b, ' ')
	m.Respond(strconv.AppendInt(b, int64(n.Number()), 10))
}

// CountRemote returns the members of room on the other nodes that answer
// within the bound (a node that does not is not counted).
func (n *Node) CountRemote(room string) int {
	total, _ := n.CountNodes(room)
	return total
}

// CountRemoteInCall is CountRemote for an answer to another node's Call
// (an owner's count of a forwarded broadcast): within half the bound, so
// that a node up in presence but dead (not yet 3.5 s silent) cannot hold
// the answer past the caller's bound, which would tell the caller
// "unavailable" about a broadcast that was numbered and delivered.
func (n *Node) CountRemoteInCall(room string) int {
	total, _ := n.countNodes(room, n.cfg.Timeout/2)
	return total
}

// CountNodes returns the members of room on the other nodes that answer
// within the bound, and the numbers of the nodes up that did not.
func (n *Node) CountNodes(room string) (total int, missing []int) {
	return n.countNodes(room, n.cfg.Timeout)
}

func (n *Node) countNodes(room string, bound time.Duration) (total int, missing []int) {
	expect := map[int]bool{} // the other nodes up
	for _, num := range n.others() {
		expect[num] = true
	}
	if len(expect) == 0 {
		return 0, nil
	}
	defer func() { missing = sortedKeys(expect) }()
	if !n.Connected() {
		return 0, nil
	}
	inbox := n.nc.NewRespInbox()
	sub, err := n.nc.SubscribeSync(inbox)
	if err != nil {
		return 0, nil
	}
	defer sub.Unsubscribe()
	if err := n.nc.PublishRequest(subjCount, inbox, []byte(room)); err != nil {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	for len(expect) > 0 {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			break
		}
		c, num, _ := strings.Cut(string(m.Data), " ")
		v, _ := strconv.Atoi(c)
		k, _ := strconv.Atoi(num)
		if expect[k] {
			total += v
			delete(expect, k)
		}
	}
	return total, nil
}
