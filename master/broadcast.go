package master

import (
	"sync"
	"time"

	"github.com/forkd/forkd/ipc"
)

// broadcastSum adds up a BASE-mode broadcast's answers: each process
// holding members of the room queues the message to them and answers how
// many it reached and skipped (send buffer full); the origin gets the sum
// once all have answered, or what has arrived after broadcastWait.
type broadcastSum struct {
	mu               sync.Mutex
	left             int
	reached, skipped uint32
	origin           *proc
	seq              uint32
	done             bool
	timer            *time.Timer
	tail             ipc.BroadcastResult // the message's seq and the room's epoch (users.go)
}

// broadcastWait bounds how long a broadcast waits for its holders'
// answers: under the worker's own bus call timeout (5s), so the caller
// gets the sum rather than ErrTimeout.
const broadcastWait = 4 * time.Second

func (s *broadcastSum) add(reached, skipped uint32) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.reached += reached
	s.skipped += skipped
	s.left--
	if s.left > 0 {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.finish()
}

func (s *broadcastSum) finish() {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.done = true
	if s.timer != nil {
		s.timer.Stop()
	}
	reached, skipped := s.reached, s.skipped
	s.mu.Unlock()
	if s.seq != 0 {
		res := s.tail
		res.Skipped = skipped
		s.origin.out.Send(&ipc.Header{Type: ipc.TypeResult, Seq: s.seq, Code: uint16(ipc.OK), Arg: reached}, res.Append(nil), nil)
	}
}

// broadcastBase fans a broadcast out to the processes holding members of
// room (BASE mode) and answers p with the members reached and skipped.
func (m *Master) broadcastBase(p *proc, f ipc.Frame, room string, tail ipc.BroadcastResult) {
	holders, _ := m.rooms.holders(room)
	sum := &broadcastSum{left: len(holders), origin: p, seq: f.Seq, tail: tail}
	remote := m.clusterPublish(f) // the other nodes' members count as one more share
	if remote {
		sum.left++
	}
	if sum.left == 0 {
		sum.finish()
		return
	}
	sum.mu.Lock()
	sum.timer = time.AfterFunc(broadcastWait, sum.finish)
	sum.mu.Unlock()
	if remote {
		go func() { sum.add(uint32(m.cluster.CountRemote(room)), 0) }()
	}
	for _, h := range holders {
		h.mu.Lock()
		seq := h.nextSeq()
		h.routes[seq] = route{sum: sum}
		h.mu.Unlock()
		if err := h.out.Send(&ipc.Header{Type: ipc.TypeBroadcast, Flags: f.Flags, Conn: f.Conn, Seq: seq}, f.Payload, nil); err != nil {
			routed(h, h.routes, seq)
			sum.add(0, uint32(m.rooms.count(room, h))) // its queue is full: its members are skipped
		}
	}
}
