package master

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/metrics"
	"github.com/forkd/forkd/reactor"
)

// The master is this server's only NATS client (package cluster): it
// already routes every cross-worker operation (PROCESS mode: its reactor
// holds the connections; BASE mode: its hub), so an operation on another
// node's connection is one more hop from the hub, and workers need no NATS
// client.

// startCluster joins the cluster before any worker starts, so the ids they
// issue carry the node number (a node that cannot reach NATS yet joins
// later; see clusterLocal.SetNode).
func (m *Master) startCluster() error {
	cfg := m.opts.Cluster
	if cfg == nil {
		return nil
	}
	c := *cfg
	c.Log = m.log
	n, err := cluster.Start(c, clusterLocal{m})
	if err != nil {
		return err
	}
	m.cluster = n
	if n.Number() == 0 {
		// Not joined: ids carry node 0 until it does (ids.go, scatter).
		m.ids.scatter()
	}
	m.clusterJoined.Store(n)
	m.bus = clusterBus{m: m, local: m.bus}
	return nil
}

// clusterBus is the cluster backend in the master's Bus seam (mode.go),
// around the mode's local bus: an operation on a connection of another
// node goes to that node; everything else (and rooms, whose broadcasts
// the local buses send on to the cluster) stays local.
type clusterBus struct {
	m     *Master
	local Bus
}

func (b clusterBus) Route(p *proc, f ipc.Frame) {
	switch f.Type {
	case ipc.TypePush, ipc.TypeClose, ipc.TypeQuery, ipc.TypeLeave, ipc.TypeUID, ipc.TypeSession:
	case ipc.TypeJoin:
		if f.Flags == ipc.JoinCount { // a BASE worker's count report
			b.local.Route(p, f)
			return
		}
	default:
		b.local.Route(p, f)
		return
	}
	if n := b.m.remote(f.Conn); n != 0 {
		b.m.clusterCall(p, f, n)
		return
	}
	b.local.Route(p, f)
}

func (m *Master) stopCluster() {
	if m.cluster != nil {
		m.cluster.Close()
	}
}

// node returns this server's node number in ids (0: none).
func (m *Master) node() int { return int(m.nodeNum.Load()) }

// remote returns the node holding connection id when it is another node
// of the cluster, else 0 (this server: ids of node 0 are always local).
func (m *Master) remote(id uint64) int {
	n := int(reactor.Node(id))
	if n == 0 || n == m.node() || m.cluster == nil {
		return 0
	}
	return n
}

// clusterCall runs f on node n, off the caller's read loop, and answers p.
func (m *Master) clusterCall(p *proc, f ipc.Frame, n int) {
	op := cluster.Op{Type: uint8(f.Type), Flags: f.Flags, Code: f.Code, Arg: f.Arg, Conn: f.Conn,
		Data: append([]byte(nil), f.Payload...)}
	if f.Type == ipc.TypePipe {
		op.Conn = 0
	}
	seq := f.Seq
	go func() {
		r := m.cluster.Call(n, op)
		if seq != 0 {
			p.out.SendWait(&ipc.Header{Type: ipc.TypeResult, Seq: seq, Code: uint16(r.Outcome), Arg: r.Arg}, r.Data, nil)
		}
	}()
}

// clusterBroadcast (PROCESS) sends a room message on to the other nodes,
// and answers p with the members reached here plus the other nodes'
// members that they report within the bound (whether each of those was
// reached or skipped is known only on its node), and the skipped here.
func (m *Master) clusterBroadcast(p *proc, f ipc.Frame, room string, data []byte, reached, skipped int) {
	b, _ := ipc.ParseBroadcast(f.Flags, f.Payload) // the master's number for it (users.go)
	m.cluster.Publish(room, cluster.Cast{Flags: f.Flags &^ ipc.BroadcastExt, Except: f.Conn, Exclude: b.Exclude, Seq: b.Seq, Epoch: b.Epoch, Data: data})
	if f.Seq == 0 {
		return
	}
	seq := f.Seq
	res := ipc.BroadcastResult{Skipped: uint32(skipped), Seq: b.Seq, Epoch: b.Epoch}.Append(nil)
	go func() {
		n := reached + m.cluster.CountRemote(room)
		p.out.SendWait(&ipc.Header{Type: ipc.TypeResult, Seq: seq, Code: uint16(ipc.OK), Arg: uint32(n)}, res, nil)
	}()
}

// clusterPublish (BASE) sends a room message on to the other nodes; true
// when the caller waits for the count (the other nodes' members are then
// one more share of the broadcast's sum).
func (m *Master) clusterPublish(f ipc.Frame) bool {
	if m.cluster == nil {
		return false
	}
	b, ok := ipc.ParseBroadcast(f.Flags, f.Payload)
	if !ok {
		return false
	}
	m.cluster.Publish(b.Room, cluster.Cast{Flags: f.Flags &^ ipc.BroadcastExt, Except: f.Conn, Exclude: b.Exclude, Seq: b.Seq, Epoch: b.Epoch, Data: b.Data})
	return f.Seq != 0
}

// clusterCount answers p with room's cluster-wide member count, and the
// nodes that did not answer in time (ipc.AppendMissing).
func (m *Master) clusterCount(p *proc, f ipc.Frame, room string, local int) {
	seq := f.Seq
	go func() {
		n, missing := m.cluster.CountNodes(room)
		p.out.SendWait(&ipc.Header{Type: ipc.TypeResult, Seq: seq, Code: uint16(ipc.OK), Arg: uint32(local + n)}, ipc.AppendMissing(nil, missing), nil)
	}()
}

// roomChanged tells the cluster this server's member count of room.
func (m *Master) roomChanged(room string, n int) {
	if m.cluster != nil {
		m.cluster.RoomCount(room, n)
	}
}

// clusterLocal is what this server offers the other nodes.
type clusterLocal struct{ m *Master }

// SetNode takes the node number the cluster assigned (at start, or later
// when NATS was down at start). Under the lock that orders the frames
// after a worker's Welcome, so that every BASE worker ends with the last
// number: one welcomed before gets it here, one welcomed after in welcome.
func (l clusterLocal) SetNode(n int) {
	m := l.m
	m.sec.mu.Lock()
	defer m.sec.mu.Unlock()
	m.nodeNum.Store(int32(n))
	if m.listening.Load() && m.reactor != nil {
		m.reactor.SetNode(uint16(n))
	}
	m.mu.Lock()
	var procs []*proc
	for _, sl := range m.slots {
		if sl.worker() {
			for _, p := range append([]*proc{sl.cur, sl.next}, sl.old...) {
				if p != nil && p.welcomed.Load() {
					procs = append(procs, p)
				}
			}
		}
	}
	m.mu.Unlock()
	for _, p := range procs {
		m.sendNodeLocked(p)
	}
}

// sendNodeLocked tells a welcomed BASE worker the node number (m.sec.mu held).
func (m *Master) sendNodeLocked(p *proc) {
	if m.cluster == nil || m.opts.Mode != ModeBase || !p.slot.worker() {
		return
	}
	p.out.Send(&ipc.Header{Type: ipc.TypeClusterNode, Arg: uint32(m.node())}, nil, nil)
}

// listenersOpen marks the reactor (PROCESS) as made: SetNode may reach it
// from now on, and the number it may have missed is applied.
func (m *Master) listenersOpen() {
	m.sec.mu.Lock()
	defer m.sec.mu.Unlock()
	m.listening.Store(true)
	if m.reactor != nil {
		m.reactor.SetNode(uint16(m.node()))
	}
}

func (l clusterLocal) Apply(op cluster.Op, done func(cluster.Result)) {
	m := l.m
	f := ipc.Frame{Header: ipc.Header{Type: ipc.Type(op.Type), Flags: op.Flags, Code: op.Code, Arg: op.Arg, Conn: op.Conn}, Payload: op.Data}
	answer := func(out ipc.Outcome, arg uint32, data []byte) {
		done(cluster.Result{Outcome: out, Arg: arg, Data: data})
	}
	switch f.Type {
	case ipc.TypePipe:
		to := int(f.Arg)
		if to < 0 || to >= m.opts.Workers+m.opts.TaskWorkers+len(m.opts.Processes) || !m.toSlot(to, &ipc.Header{Type: ipc.TypePipe, Code: f.Code}, f.Payload) {
			answer(ipc.Unavailable, 0, nil)
		} else {
			answer(ipc.OK, 0, nil)
		}
		return
	case ipc.TypePush, ipc.TypeClose, ipc.TypeQuery, ipc.TypeJoin, ipc.TypeLeave, ipc.TypeUID, ipc.TypeSession:
	default:
		if !m.applyUsers(f, answer) {
			answer(ipc.Failed, 0, nil)
		}
		return
	}
	if n := int(reactor.Node(f.Conn)); n != m.node() || f.Conn > reactor.MaxID {
		answer(ipc.NoConnection, 0, nil) // not an id of this node (a stale number)
		return
	}
	if r := m.reactor; r != nil {
		switch f.Type {
		case ipc.TypePush:
			answer(r.Push(f.Conn, int(f.Flags), f.Payload), 0, nil)
		case ipc.TypeClose:
			answer(r.CloseConn(f.Conn, int(f.Code), string(f.Payload)), 0, nil)
		case ipc.TypeQuery:
			c := r.Conn(f.Conn)
			if c == nil {
				answer(ipc.NoConnection, 0, nil)
				return
			}
			b, _ := json.Marshal(c.Info(int(c.Slot.Load())))
			answer(ipc.OK, 0, b)
		case ipc.TypeJoin:
			go func() { answer(r.Join(f.Conn, string(f.Payload)), 0, nil) }()
		case ipc.TypeLeave:
			go func() { answer(r.Leave(f.Conn, string(f.Payload)), 0, nil) }()
		case ipc.TypeUID: // a uid is a room of its own: the join may wait as Join does
			go func() { answer(r.BindUID(f.Conn, string(f.Payload)), 0, nil) }()
		case ipc.TypeSession:
			out, b := r.Session(f.Conn, f.Flags, f.Payload)
			answer(out, 0, b)
		}
		return
	}
	// BASE: to the owning worker, whose Result comes back through its route.
	owner := int(reactor.Owner(f.Conn))
	dst := (*proc)(nil)
	if owner < m.opts.Workers {
		dst = m.current(owner)
	}
	if dst == nil {
		answer(ipc.NoConnection, 0, nil)
		return
	}
	h := f.Header
	h.Flags = op.Flags
	if f.Type == ipc.TypeJoin {
		h.Flags = 0 // a member's join, not a count report
	}
	dst.mu.Lock()
	h.Seq = dst.nextSeq()
	dst.routes[h.Seq] = route{done: answer}
	dst.mu.Unlock()
	if err := dst.out.Send(&h, f.Payload, nil); err != nil {
		routed(dst, dst.routes, h.Seq)
		answer(ipc.BufferFull, 0, nil)
	}
}

func (l clusterLocal) Broadcast(room string, c cluster.Cast) { l.m.remoteCast(room, c) }

func (l clusterLocal) Count(room string) int {
	if l.m.reactor != nil {
		return l.m.reactor.Count(room)
	}
	_, n := l.m.rooms.holders(room)
	return n
}

func (l clusterLocal) Info() cluster.NodeInfo {
	m := l.m
	i := cluster.NodeInfo{Mode: m.opts.Mode, Workers: m.opts.Workers}
	if m.reactor != nil {
		i.Conns = m.reactor.Len()
		return i
	}
	type worker struct {
		id int
		p  *proc
	}
	m.mu.Lock()
	var procs []worker
	for _, sl := range m.slots {
		if sl.worker() && sl.cur != nil && sl.cur.State() == StateReady {
			procs = append(procs, worker{sl.id, sl.cur})
		}
	}
	m.mu.Unlock()
	for _, w := range procs {
		var s ipc.WorkerStats
		if b, err := w.p.query(ipcStats, infoWait); err == nil && json.Unmarshal(b, &s) == nil {
			i.Conns += s.Connections
		} else {
			i.Uncounted = append(i.Uncounted, w.id) // named in status --cluster, not left out in silence
		}
	}
	return i
}

// infoWait bounds a BASE worker's answer to the heartbeat's count of
// connections (cluster.NodeInfo.Conns, once a second).
const infoWait = 500 * time.Millisecond

// Conns is one page of the listing `connections` makes (ConnectionsJSON:
// in BASE mode every worker asked at once, and those that did not answer
// within connsWait named).
func (l clusterLocal) Conns(offset, limit int) ([]json.RawMessage, []int) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	list, missing := l.m.ConnectionsJSON()
	all, err := splitJSONArray(list)
	if err != nil { // the master put it together: cannot happen
		l.m.log.Warn().Err(err).Msg("connections --cluster: this node's list is not a JSON array")
	}
	out := []json.RawMessage{}
	for i := max(offset, 0); i < len(all) && len(out) < limit; i++ {
		out = append(out, all[i])
	}
	return out, missing
}

// ClusterPage is how many connections one page of `connections --cluster`
// carries.
const ClusterPage = 500

// ClusterConnections returns one page of node n's connections from offset
// on (n: this node's number or 0 for this server), and the ids of that
// node's workers that did not answer in time (their connections are not
// in the page). A node that gave no page: a *cluster.NoAnswerError.
func (m *Master) ClusterConnections(n, offset int) ([]json.RawMessage, []int, error) {
	if m.cluster == nil {
		return nil, nil, errNoCluster
	}
	if n == 0 || n == m.node() {
		page, missing := clusterLocal{m}.Conns(offset, ClusterPage)
		return page, missing, nil
	}
	p, err := m.cluster.Conns(n, offset, ClusterPage)
	return p.Page, p.Missing, err
}

var errNoCluster = errors.New("master: this server is not in a cluster (start it with --cluster or --cluster-embed)")

// outcomeNames label cluster_calls_total (index: ipc.Outcome).
var outcomeNames = []string{"ok", "no_connection", "closed", "buffer_full", "timeout", "too_large", "unavailable", "failed"}

// clusterMetrics adds the cluster series, labelled with the node's name.
func (m *Master) clusterMetrics(ch chan<- prometheus.Metric) {
	c := m.cluster
	if c == nil {
		return
	}
	name := c.Name()
	up := 0.0
	if c.Connected() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(metrics.DescClusterConnected, prometheus.GaugeValue, up, name)
	ch <- prometheus.MustNewConstMetric(metrics.DescClusterNodes, prometheus.GaugeValue, float64(len(c.Peers())), name)
	for i, v := range c.Calls() {
		if i < len(outcomeNames) {
			ch <- prometheus.MustNewConstMetric(metrics.DescClusterCalls, prometheus.CounterValue, float64(v), name, outcomeNames[i])
		}
	}
	ch <- prometheus.MustNewConstMetric(metrics.DescClusterBcasts, prometheus.CounterValue, float64(c.Broadcasts()), name)
	ch <- prometheus.MustNewConstMetric(metrics.DescClusterDropped, prometheus.CounterValue, float64(c.Dropped()), name)
}
