package master

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/forkd/forkd/ipc"
)

// roomCounts (BASE mode) records how many members of each room every worker
// process holds, so a broadcast crosses only towards processes with members.
type roomCounts struct {
	mu sync.Mutex
	by map[string]map[*proc]int32
	// pending: replays on their way to a process (users.go): it holds
	// the room until it has reported its own count.
	pending map[string]map[*proc]int
}

func (rc *roomCounts) set(room string, p *proc, n int32) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.by == nil {
		rc.by = make(map[string]map[*proc]int32)
	}
	set := rc.by[room]
	if n <= 0 {
		if set != nil {
			delete(set, p)
			if len(set) == 0 {
				delete(rc.by, room)
			}
		}
		return
	}
	if set == nil {
		set = make(map[*proc]int32)
		rc.by[room] = set
	}
	set[p] = n
}

// forget drops p's members and returns the rooms it had members in.
func (rc *roomCounts) forget(p *proc) []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var had []string
	for room, set := range rc.by {
		if _, ok := set[p]; ok {
			had = append(had, room)
		}
		delete(set, p)
		if len(set) == 0 {
			delete(rc.by, room)
		}
	}
	return had
}

// count returns how many members of room p holds.
func (rc *roomCounts) count(room string, p *proc) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return int(rc.by[room][p])
}

// holders returns the processes holding members of room, and the total.
func (rc *roomCounts) holders(room string) ([]*proc, int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var ps []*proc
	total := 0
	for p, n := range rc.by[room] {
		ps = append(ps, p)
		total += int(n)
	}
	for p := range rc.pending[room] {
		if _, ok := rc.by[room][p]; !ok {
			ps = append(ps, p)
		}
	}
	return ps, total
}

func (m *Master) isStopping() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stopping
}

// drain asks p to stop taking work and exit (ipc.Drain* code). Work
// routed to p before it was detached goes out ahead of the Drain frame, so
// the worker answers it before it stops.
func (m *Master) drain(p *proc, code uint16) {
	m.mode.detach(p)
	p.closeGate(2 * time.Second)
	p.out.Send(&ipc.Header{Type: ipc.TypeDrain, Code: code}, nil, nil)
}

// streamGone runs when a worker's ipc stream has ended.
func (m *Master) streamGone(p *proc) {
	m.mode.gone(p)
	for _, room := range m.rooms.forget(p) {
		if m.cluster != nil {
			_, total := m.rooms.holders(room)
			m.roomChanged(room, total)
		}
	}
	// Tasks and bus operations in flight on a dead process fail now rather
	// than time out.
	p.mu.Lock()
	tasks, routes := p.tasks, p.routes
	p.tasks, p.routes = make(map[uint32]route), make(map[uint32]route)
	p.mu.Unlock()
	for _, r := range tasks {
		r.origin.out.Send(&ipc.Header{Type: ipc.TypeResult, Seq: r.seq, Code: uint16(ipc.Failed)},
			[]byte(fmt.Sprintf("task worker %d exited mid-task", p.slot.id)), nil)
	}
	for _, r := range routes {
		if r.on != nil {
			r.on(ipc.Frame{}, true)
			continue
		}
		if r.sum != nil {
			r.sum.add(0, 0) // its members were neither reached nor refused: gone
			continue
		}
		r.answer(ipc.NoConnection, nil)
	}
}

// routed takes the route of an answer from p to a forwarded frame.
func routed(p *proc, m map[uint32]route, seq uint32) (route, bool) {
	p.mu.Lock()
	r, ok := m[seq]
	delete(m, seq)
	p.mu.Unlock()
	return r, ok
}

// current returns the process serving slot id once it has been welcomed,
// or nil.
func (m *Master) current(id int) *proc {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id < 0 || id >= len(m.slots) {
		return nil
	}
	// Not a process still starting: its first frames must be Welcome and
	// Secrets (a pipe message or a push routed to a replacement before
	// them made it fail to start).
	if p := m.slots[id].cur; p != nil && p.welcomed.Load() {
		return p
	}
	return nil
}

// toSlot sends a frame to the process serving slot id (false: none).
func (m *Master) toSlot(id int, h *ipc.Header, a []byte) bool {
	p := m.current(id)
	if p == nil {
		return false
	}
	return p.out.Send(h, a, nil) == nil
}

func result(p *proc, f ipc.Frame, out ipc.Outcome, arg uint32, data []byte) {
	if f.Seq == 0 {
		return
	}
	p.out.SendWait(&ipc.Header{Type: ipc.TypeResult, Seq: f.Seq, Code: uint16(out), Arg: arg}, data, nil)
}

// frame handles one frame from worker p.
func (m *Master) frame(p *proc, f ipc.Frame) error {
	switch f.Type {
	case ipc.TypeResponse:
		m.mode.fromWorker(p, f)
	case ipc.TypeStats, ipc.TypeConns, ipc.TypeMetrics, ipc.TypeReopenLogs:
		p.mu.Lock()
		ch := p.queries[f.Seq]
		p.mu.Unlock()
		if ch != nil {
			select {
			case ch <- append([]byte(nil), f.Payload...):
			default:
			}
		}
	case ipc.TypeRetire:
		m.goJoin(func() { m.retire(p) })
	case ipc.TypePong:
		p.pong()
	case ipc.TypeCredit:
		m.mode.fromWorker(p, f)
	case ipc.TypeIDLease:
		start, err := m.ids.lease()
		out := ipc.OK
		if err != nil {
			out = ipc.Unavailable
		}
		p.out.Send(&ipc.Header{Type: ipc.TypeResult, Seq: f.Seq, Code: uint16(out)}, binary.LittleEndian.AppendUint64(nil, start), nil)
	case ipc.TypePipe:
		if n := int(f.Conn); n != 0 && n != m.node() {
			if m.cluster == nil {
				result(p, f, ipc.Unavailable, 0, nil)
			} else {
				m.clusterCall(p, f, n)
			}
			return nil
		}
		to := int(f.Arg)
		if to < 0 || to >= len(m.slots) || !m.toSlot(to, &ipc.Header{Type: ipc.TypePipe, Code: f.Code}, f.Payload) {
			result(p, f, ipc.Unavailable, 0, nil)
		} else {
			result(p, f, ipc.OK, 0, nil)
		}
	case ipc.TypeTask:
		m.task(p, f)
	case ipc.TypeTaskResult:
		if r, ok := routed(p, p.tasks, f.Seq); ok {
			r.origin.out.Send(&ipc.Header{Type: ipc.TypeResult, Seq: r.seq, Code: f.Code}, f.Payload, nil)
		}
	case ipc.TypeResult:
		// BASE: an owner's answer to an operation routed from another worker.
		if r, ok := routed(p, p.routes, f.Seq); ok && r.on != nil {
			r.on(f, false)
		} else if ok && r.sum != nil {
			r.sum.add(f.Arg, uint32(ipc.SkippedOf(f.Payload)))
		} else if ok {
			r.answer(ipc.Outcome(f.Code), f.Payload)
		}
	case ipc.TypeBroadcast, ipc.TypeMembers, ipc.TypeRecover, ipc.TypeHistory:
		m.usersFrame(p, f) // numbered and kept, then through the bus
	case ipc.TypePush, ipc.TypeClose, ipc.TypeQuery, ipc.TypeJoin, ipc.TypeLeave, ipc.TypeCount, ipc.TypeUID, ipc.TypeSession:
		m.bus.Route(p, f)
	case ipc.TypeSend:
		m.send(p, f)
	case ipc.TypeSendCredit: // a Send, then the Credit that followed it
		m.send(p, f)
		m.mode.fromWorker(p, f)
	case ipc.TypeSendFlush:
		m.sendFlush(p, f)
	case ipc.TypeError:
		return fmt.Errorf("worker %d: %s", p.slot.id, f.Payload)
	default:
		return fmt.Errorf("worker %d: unexpected frame type %d", p.slot.id, f.Type)
	}
	return nil
}

// task hands a task to a task worker: an idle one first, else round-robin;
// a full pool is a clear error to the caller, never unbounded memory.
func (m *Master) task(p *proc, f ipc.Frame) {
	const perWorker = 1024
	m.mu.Lock()
	var pool []*proc
	for _, sl := range m.slots {
		if sl.task && sl.cur != nil && sl.cur.State() == StateReady {
			pool = append(pool, sl.cur)
		}
	}
	m.mu.Unlock()
	if len(pool) == 0 {
		m.ops.taskNoWorker.Add(1)
		result(p, f, ipc.Unavailable, 0, []byte("no task workers"))
		return
	}
	var pick *proc
	for _, t := range pool {
		t.mu.Lock()
		n := len(t.tasks)
		t.mu.Unlock()
		if n == 0 {
			pick = t
			break
		}
	}
	if pick == nil {
		start := int(m.taskRR.Add(1))
		for i := range pool {
			t := pool[(start+i)%len(pool)]
			t.mu.Lock()
			n := len(t.tasks)
			t.mu.Unlock()
			if n < perWorker {
				pick = t
				break
			}
		}
	}
	if pick == nil {
		m.ops.taskFull.Add(1)
		result(p, f, ipc.BufferFull, 0, []byte("task queue full"))
		return
	}
	if !pick.enter() {
		// Drained since the pool was read: its replacement is current now.
		m.task(p, f)
		return
	}
	defer pick.leave()
	origin := ipc.TaskOrigin(p.slot.id)
	pick.mu.Lock()
	seq := pick.nextSeq()
	pick.tasks[seq] = route{origin: p, seq: f.Seq}
	pick.mu.Unlock()
	if err := pick.out.Send(&ipc.Header{Type: ipc.TypeTask, Seq: seq, Arg: origin}, f.Payload, nil); err != nil {
		routed(pick, pick.tasks, seq)
		m.ops.taskFull.Add(1)
		result(p, f, ipc.BufferFull, 0, []byte("task queue full"))
	}
}
