package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
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
		// delivers pushes.
		go func() {
			page := n.local.Conns(int(op.Arg), int(op.Code))
			b, _ := json.Marshal(page)
			m.Respond((&Result{Outcome: ipc.OK, Data: b}).encode())
		}()
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

// Publish sends a room message to the other nodes with members of room
// (false when NATS is down: the message reached no other node).
func (n *Node) Publish(room string, flags uint8, except uint64, data []byte) bool {
	if !n.Connected() {
		return false
	}
	n.casts.Add(1)
	return n.nc.Publish(subjRoom+enc(room), encodeCast(flags, except, data)) == nil
}

// RoomCount tells the cluster this node's member count of room: the node
// listens to the room while it has members, and only then.
func (n *Node) RoomCount(room string, members int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	sub := n.rooms[room]
	switch {
	case members > 0 && sub == nil:
		s, err := n.nc.Subscribe(subjRoom+enc(room), func(m *nats.Msg) {
			flags, except, data, err := decodeCast(m.Data)
			if err == nil {
				n.local.Broadcast(room, flags, except, data)
			}
		})
		if err != nil {
			n.log.Warn().Err(err).Str("room", room).Msg("cluster: room subscription failed")
			return
		}
		s.SetPendingLimits(1<<16, 64<<20)
		n.rooms[room] = s
	case members <= 0 && sub != nil:
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
	m.Respond(strconv.AppendInt(nil, int64(c), 10))
}

// CountRemote returns the members of room on the other nodes that answer
// within the bound (a node that does not is not counted).
func (n *Node) CountRemote(room string) int {
	if !n.Connected() {
		return 0
	}
	expect := 0 // the other nodes up
	for _, p := range n.Peers() {
		if p.Node != n.Number() {
			expect++
		}
	}
	if expect == 0 {
		return 0
	}
	inbox := n.nc.NewRespInbox()
	sub, err := n.nc.SubscribeSync(inbox)
	if err != nil {
		return 0
	}
	defer sub.Unsubscribe()
	if err := n.nc.PublishRequest(subjCount, inbox, []byte(room)); err != nil {
		return 0
	}
	total := 0
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.Timeout)
	defer cancel()
	for got := 0; got < expect; got++ {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			break
		}
		v, _ := strconv.Atoi(string(m.Data))
		total += v
	}
	return total
}

// Conns fetches one page of node num's connections.
func (n *Node) Conns(num, offset, limit int) ([]json.RawMessage, error) {
	// A page may take a BASE node a moment (it asks each worker): a longer
	// bound than a push's.
	if !n.Connected() {
		return nil, fmt.Errorf("cluster: node %d: NATS unreachable", num)
	}
	msg, err := n.nc.Request(subjNode+strconv.Itoa(num), (&Op{Type: opConns, Arg: uint32(offset), Code: uint16(limit)}).encode(), 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("cluster: node %d: %w", num, err)
	}
	r, err := decodeResult(msg.Data)
	if err != nil || r.Outcome != ipc.OK {
		return nil, fmt.Errorf("cluster: node %d: outcome %d", num, r.Outcome)
	}
	var page []json.RawMessage
	if err := json.Unmarshal(r.Data, &page); err != nil {
		return nil, fmt.Errorf("cluster: node %d: %w", num, err)
	}
	return page, nil
}
