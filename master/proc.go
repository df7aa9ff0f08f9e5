package master

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// Process states, as `status` shows them.
const (
	StateStarting = "starting"
	StateReady    = "ready"
	StateDraining = "draining"
	StateStopped  = "stopped"
	// A slot whose process died: a replacement is due at once
	// (restarting) or after a crash-loop back-off (backoff).
	StateRestarting = "restarting"
	StateBackoff    = "backoff"
)

// proc is one worker process and the master's end of its ipc stream.
type proc struct {
	slot  *slot
	pid   int
	os    osProcess
	in    *os.File  // ipc from the worker (out writes the other pipe)
	inRd  io.Reader // reads in (a reactor.PipeReader, see its WriterGone)
	out   *ipc.Writer
	start time.Time

	state    atomic.Value  // string
	ready    chan error    // one value: nil once Ready, or why it never will be
	exited   chan struct{} // closed when the process is reaped
	readEnd  chan struct{} // closed when readProc has read the ipc stream to its end
	readN    atomic.Uint64 // frames readProc has taken from the stream (progress, for the reaper)
	exitErr  error
	intended atomic.Bool  // stopped on purpose (drain, stop): no respawn
	startErr atomic.Value // string: why the worker said it could not start

	inflight atomic.Int64  // PROCESS: requests in flight, for dispatch=idle
	lastPong atomic.Int64  // unix nanos of the worker's last Pong (watchdog.go)
	welcomed atomic.Bool   // Welcome and Secrets sent: later Secrets frames may follow
	perIPRow int           // BASE: its row of the shared per-address table (-1: none)
	sendOK   atomic.Uint32 // PROCESS: Sends applied OK and not yet acknowledged (send.go)
	ackLater *time.Timer   // PROCESS: acknowledges them when no frame to the worker did (send.go)
	ackArmed atomic.Bool   // PROCESS: ackLater is set to fire

	// Work sent to p is ordered before its Drain frame (a drained worker
	// must see every request and message routed to it before it drains):
	// senders count themselves in with enter, and drain closes the gate,
	// waits for those inside, and only then sends Drain.
	senders atomic.Int64
	drained atomic.Bool

	mu      sync.Mutex
	calls   map[uint32]*httpCall // PROCESS: HTTP requests awaiting responses
	queries map[uint32]chan []byte
	tasks   map[uint32]route // task worker: tasks in flight, by the seq the master gave them
	routes  map[uint32]route // BASE: bus operations routed to p, awaiting its answer
	seq     uint32
}

// route is where the answer to a frame forwarded to another process goes:
// the very process that asked (not whichever serves its slot by then: a
// reload may have replaced it), under the seq it asked with. The master
// gives the forwarded frame a seq of the receiver's, so two processes of
// one slot (old and new, during a reload) never collide.
type route struct {
	origin *proc
	seq    uint32
	sum    *broadcastSum // a BASE broadcast's share: added up, not forwarded
	// on, when set, takes the answer instead (gone: the process ended first).
	on func(f ipc.Frame, gone bool)
	// done, when origin and sum are nil, takes the answer (an operation
	// another cluster node sent here).
	done func(ipc.Outcome, uint32, []byte)
}

// answer hands an owner's answer to the route's origin.
func (r route) answer(out ipc.Outcome, data []byte) {
	if r.origin == nil {
		if r.done != nil {
			r.done(out, 0, append([]byte(nil), data...))
		}
		return
	}
	r.origin.out.Send(&ipc.Header{Type: ipc.TypeResult, Seq: r.seq, Code: uint16(out)}, data, nil)
}

// kill ends p's process now (SIGKILL); its reaping follows as for any exit.
func (p *proc) kill() { p.os.Kill() }

func (p *proc) State() string { return p.state.Load().(string) }

// setState moves p to s unless it has stopped: its Ready or a drain may be
// handled after the process was reaped, and a stopped process stays
// stopped (respawn relies on it).
func (p *proc) setState(s string) {
	for {
		old := p.state.Load()
		if old == StateStopped || p.state.CompareAndSwap(old, s) {
			return
		}
	}
}

// enter admits a sender of new work (a request, a message, a connection
// event) to p; false once p drains: route the work elsewhere.
func (p *proc) enter() bool {
	p.senders.Add(1)
	if p.drained.Load() {
		p.senders.Add(-1)
		return false
	}
	return true
}

// leave ends what enter began.
func (p *proc) leave() { p.senders.Add(-1) }

// closeGate turns new work away from p and waits, at most limit, for the
// senders already inside to have queued theirs.
func (p *proc) closeGate(limit time.Duration) {
	p.drained.Store(true)
	deadline := time.Now().Add(limit)
	for p.senders.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

func (p *proc) nextSeq() uint32 {
	p.seq++
	if p.seq == 0 {
		p.seq = 1
	}
	return p.seq
}

// query sends a Stats or Conns request and waits briefly for the reply.
func (p *proc) query(t ipc.Type, timeout time.Duration) ([]byte, error) {
	ch := make(chan []byte, 1)
	p.mu.Lock()
	seq := p.nextSeq()
	p.queries[seq] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.queries, seq)
		p.mu.Unlock()
	}()
	if err := p.out.Send(&ipc.Header{Type: t, Seq: seq}, nil, nil); err != nil {
		return nil, err
	}
	select {
	case b := <-ch:
		return b, nil
	case <-p.exited:
		return nil, errors.New("worker exited")
	case <-time.After(timeout):
		return nil, errors.New("worker did not answer")
	}
}

// Where spawn puts the new process in its slot.
const (
	asCur  = false // the process serving the slot (start, respawn)
	asNext = true  // a replacement being started (reload)
)

// spawn starts a worker process for slot sl and puts it in its place
// (asCur or asNext) before anything can see it exit.
func (m *Master) spawn(sl *slot, next bool) (*proc, error) {
	// Its four goroutines (writer, reader, watchdog, reaper) are joined by Run.
	m.mu.Lock()
	if m.joined {
		m.mu.Unlock()
		return nil, tagged{fmt.Errorf("master: start worker %d: server stopped", sl.id), ErrStopping}
	}
	m.wg.Add(4)
	m.mu.Unlock()
	started := false
	defer func() {
		if !started {
			m.wg.Add(-4)
		}
	}()
	// The ipc stream is two pipes (see ipc.Pipe): the worker reads fd 3
	// and writes fd 4.
	toR, toW, err := ipc.Pipe()
	if err != nil {
		return nil, fmt.Errorf("master: ipc pipe: %w", err)
	}
	fromR, fromW, err := ipc.Pipe()
	if err != nil {
		toR.Close()
		toW.Close()
		return nil, fmt.Errorf("master: ipc pipe: %w", err)
	}
	defer toR.Close()
	defer fromW.Close()

	cfg := m.workerConfig(sl, m.mode.firstLease(sl))
	spec := procSpec{
		Path:       m.opts.Exe,
		Args:       append([]string{cfg.Title}, m.opts.Args...), // Args[0]: what ps and /proc/PID/cmdline show
		Files:      append([]*os.File{toR, fromW}, sl.files...),
		Output:     m.opts.Output,
		Credential: m.opts.Credential,
	}
	row := -1
	if m.sec.perIP != nil && sl.worker() {
		row = m.perIPRow()
		cfg.PerIPFD, cfg.PerIPRow, cfg.PerIPRows, cfg.PerIPSeed = 3+len(spec.Files), row, len(m.sec.perIPRows), m.sec.seed
		spec.Files = append(spec.Files, m.sec.perIPFile)
	}
	spec.Env = append(filterEnv(os.Environ()), cfg.Encode(), EnvRole+"="+RoleWorker)
	osp, err := m.starter.start(spec)
	if err != nil {
		toW.Close()
		fromR.Close()
		m.freePerIPRow(row)
		return nil, fmt.Errorf("master: start worker %d: %w", sl.id, err)
	}
	p := &proc{
		slot:    sl,
		pid:     osp.Pid(),
		os:      osp,
		in:      fromR,
		inRd:    reactor.NewPipeReader(fromR),
		out:     ipc.NewWriter(toW, m.opts.BusQueue),
		start:   m.clock.Now(),
		ready:   make(chan error, 1),
		exited:  make(chan struct{}),
		readEnd: make(chan struct{}),
		calls:   make(map[uint32]*httpCall),
		queries: make(map[uint32]chan []byte),
		tasks:   make(map[uint32]route),
		routes:  make(map[uint32]route),

		perIPRow: row,
	}
	p.out.SetLead(p.leadAck)
	p.state.Store(StateStarting)
	m.mu.Lock()
	if next {
		sl.next = p
	} else {
		sl.cur = p
	}
	late := m.stopping && !next // a respawn that raced the stop: shutdown has its list already
	m.mu.Unlock()
	if late {
		p.intended.Store(true)
		p.kill()
	}
	started = true
	p.pong()
	m.log.Debug().Int("worker", sl.id).Int("worker_pid", p.pid).Msg("worker started")
	go func() {
		defer m.wg.Done()
		p.out.Run()
	}()
	go func() {
		defer m.wg.Done()
		m.readProc(p)
	}()
	go func() {
		defer m.wg.Done()
		m.watch(p)
	}()
	go func() {
		defer m.wg.Done()
		p.exitErr = osp.Wait()
		p.state.Store(StateStopped)
		// Its exit may have left no edge for the stream's EOF: the reader
		// must read on rather than wait for one.
		if pr, ok := p.inRd.(*reactor.PipeReader); ok {
			pr.WriterGone()
		}
		// The worker's last frames (a drained worker's last responses, a
		// failed one's reason) may still sit in the pipe: let readProc
		// take them, up to the EOF that follows, before closing it.
		m.awaitReadEnd(p, time.After)
		fromR.Close()
		p.out.Close()
		toW.Close() // ends a write waiting on the pipe (nothing reads it now)
		m.freePerIPRow(p.perIPRow)
		close(p.exited)
		m.exited(p)
	}()
	return p, nil
}

// filterEnv drops variables that belong to a parent's role.
func filterEnv(env []string) []string {
	out := env[:0:0]
	for _, e := range env {
		// The API token reaches workers in their Secrets frame, not in
		// an environment a worker running as --user would expose.
		if strings.HasPrefix(e, ipc.EnvWorkerConfig+"=") || strings.HasPrefix(e, EnvRole+"=") ||
			strings.HasPrefix(e, EnvAPIToken+"=") || strings.HasPrefix(e, EnvClusterToken+"=") ||
			strings.HasPrefix(e, EnvCluster+"=") {
			continue
		}
		// systemd's variables are the master's: a worker must not
		// notify readiness or claim the passed sockets.
		if name, _, _ := strings.Cut(e, "="); systemdEnv[name] {
			continue
		}
		out = append(out, e)
	}
	return out
}

func (m *Master) workerConfig(sl *slot, idStart uint64) ipc.WorkerConfig {
	o := &m.opts
	ls := make([]ipc.WorkerListener, len(o.Listeners))
	for i, l := range o.Listeners {
		ls[i] = ipc.WorkerListener{Name: l.Name, Addr: m.addrs[i], Protocol: l.Protocol, Upgrade: l.Upgrade, TLS: m.listenerTLS(i)}
	}
	return ipc.WorkerConfig{
		Mode: o.Mode, Slot: sl.id, Task: sl.task, IDNode: m.node(), IDStart: idStart,
		Workers: o.Workers, TaskWorkers: o.TaskWorkers, Listeners: ls,
		MaxPackageSize: o.MaxPackageSize, MaxSendBuffer: o.MaxSendBuffer, MaxConns: o.MaxConns,
		MaxRequest: o.MaxRequest, HeartbeatIdle: o.HeartbeatIdle, ReloadWait: o.ReloadWait,
		ReadTimeout: o.ReadTimeout, IdleTimeout: o.IdleTimeout,
		LogFormat: o.LogFormat, LogLevel: o.LogLevel,
		APIAllow: o.APIAllow, AllowedOrigins: o.AllowedOrigins, MaxConnPerIP: o.MaxConnPerIP, PerIPFD: -1, PerIPRow: -1,
		LogFile: o.LogFile, Process: sl.process, Title: m.title(sl),
	}
}

// readProc handles the handshake, then every frame the worker sends.
func (m *Master) readProc(p *proc) {
	rd := ipc.NewReader(p.inRd, ipc.MaxPayload)
	err := m.handshake(p, rd)
	if err == nil {
		for {
			var f ipc.Frame
			f, err = rd.Next()
			if err != nil {
				break
			}
			p.readN.Add(1)
			if err = m.frame(p, f); err != nil {
				break
			}
			if rd.Buffered() == 0 {
				m.ackLater(p) // before the read that may wait
			}
			rd.Shrink()
		}
	}
	if p.ackLater != nil {
		p.ackLater.Stop()
	}
	close(p.readEnd)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		m.log.Error().Err(err).Int("worker", p.slot.id).Int("worker_pid", p.pid).Msg("ipc stream closed")
		p.kill()
	}
	select {
	case p.ready <- fmt.Errorf("exited before ready (%v)", p.describeExit()):
	default:
	}
	m.streamGone(p)
}

// readEndQuiet is how long the reaper waits for an exited worker's stream
// to make progress before it closes the stream unread.
const readEndQuiet = 2 * time.Second

// awaitReadEnd waits until readProc has read p's stream to its end, which
// comes soon after the worker exits, unless another process holds the
// pipe's write end open (a child the worker started and that inherited
// it): then it gives up once readProc has taken no frame for readEndQuiet.
// Waiting a fixed time instead lost a drained worker's last responses
// when a loaded master was still reading them at the deadline. (after is
// time.After: real time even under a test's fake clock, whose fake workers'
// streams end only when closed.)
func (m *Master) awaitReadEnd(p *proc, after func(time.Duration) <-chan time.Time) {
	for last := p.readN.Load(); ; {
		select {
		case <-p.readEnd:
			return
		case <-after(readEndQuiet):
		}
		n := p.readN.Load()
		if n == last {
			m.log.Warn().Int("worker", p.slot.id).Int("worker_pid", p.pid).Dur("quiet", readEndQuiet).
				Msg("worker exited but its ipc stream did not end: closing it (a process it started may hold the pipe)")
			return
		}
		last = n
	}
}

func (p *proc) describeExit() string {
	select {
	case <-p.exited:
		if p.exitErr == nil {
			return "exit status 0"
		}
		return p.exitErr.Error()
	case <-time.After(2 * time.Second):
		return "ipc stream closed"
	}
}

func (m *Master) handshake(p *proc, rd *ipc.Reader) error {
	f, err := rd.Next()
	if err != nil {
		return err
	}
	if f.Type != ipc.TypeHello || len(f.Payload) < 2 {
		return fmt.Errorf("master: worker %d: expected hello, got frame type %d", p.slot.id, f.Type)
	}
	if v := binary.LittleEndian.Uint16(f.Payload); v != ipc.Version {
		reason := fmt.Sprintf("ipc version mismatch: worker speaks v%d, master v%d; restart the server to run the new binary", v, ipc.Version)
		p.out.Send(&ipc.Header{Type: ipc.TypeError}, []byte(reason), nil)
		p.ready <- errors.New(reason)
		return errors.New(reason)
	}
	m.welcome(p)
	for {
		f, err := rd.Next()
		if err != nil {
			return err
		}
		switch f.Type {
		case ipc.TypeReady:
			p.setState(StateReady)
			p.ready <- nil
			return nil
		case ipc.TypeError:
			reason := string(f.Payload)
			p.startErr.Store(reason)
			p.ready <- errors.New(reason)
			return fmt.Errorf("master: worker %d failed to start: %s", p.slot.id, reason)
		default:
			if err := m.frame(p, f); err != nil {
				return err
			}
		}
	}
}
