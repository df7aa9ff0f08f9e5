package master

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
	"github.com/forkd/forkd/worker"
)

// Process roles, carried in EnvRole.
const (
	EnvRole     = "FORKD_ROLE"
	EnvReadyFD  = "FORKD_READY_FD"
	EnvAPIToken = "FORKD_API_TOKEN"
	RoleWorker  = "worker"
	RoleMaster  = "master" // a daemonized master
	ModeProcess = worker.ModeProcess
	ModeBase    = worker.ModeBase
)

// Listener is one port the master opens.
type Listener struct {
	Name     string
	Addr     string
	Protocol string // "http" or "websocket"
	Upgrade  bool
	// TLS: certificate and key files (read by the master, re-read on
	// reload), and/or the program's own tls.Config. Neither: plain TCP.
	TLSCert, TLSKey string
	TLSConfig       *tls.Config
}

// Options configure a master.
type Options struct {
	Mode           string
	Workers        int
	TaskWorkers    int
	Listeners      []Listener
	Dispatch       string // round-robin, fd, ip, idle
	ReactorNum     int    // PROCESS mode: the master's GOMAXPROCS; 0: DefaultReactorNum
	RunDir         string
	MaxRequest     int
	MaxPackageSize int
	MaxSendBuffer  int
	MaxConns       int
	HeartbeatIdle  time.Duration
	ReadTimeout    time.Duration // reading one request (headers and body); 0: reactor default
	IdleTimeout    time.Duration // keep-alive idle between requests; 0: reactor default
	ReloadWait     time.Duration
	ReadyTimeout   time.Duration // how long a starting worker may take; default 30s
	BusQueue       int           // bytes queued towards one worker; default 16 MiB
	Reloadable     bool          // workers take part in reload (Workerman's reloadable)
	LogFormat      string
	LogLevel       string
	// WorkerTimeout: a worker silent (no Pong) this long is unresponsive,
	// twice this long killed and replaced; default DefaultWorkerTimeout.
	WorkerTimeout time.Duration
	// RequestTimeout: PROCESS mode, an HTTP request a worker has not
	// answered in this long gets 504; default DefaultRequestTimeout.
	RequestTimeout time.Duration
	LogFile        string   // the file behind Output, reopened by ReopenLogs ("" : not a file)
	MetricsAddr    string   // --metrics: serve Prometheus /metrics here ("": off)
	Name           string   // --name, in every process title
	Processes      []string // user processes (Server.Processes), by name; slots after the task workers
	// Security (docs/security.md).
	APIToken       string              // the operator API's bearer token ("": none); never logged
	APIAllow       []string            // CIDRs that may call the operator API
	AllowedOrigins []string            // WebSocket Origins allowed besides the server's own
	MaxConnPerIP   int                 // 0: off
	TicketRotate   time.Duration       // TLS session ticket key lifetime as the newest; 0: DefaultTicketRotate
	Credential     *syscall.Credential // --user/--group: workers run as this; nil: as the master
	// IDNode is this server's node number in connection ids (0: a single
	// server; a cluster gives each server its own, 0..reactor.MaxNode).
	IDNode int

	Exe    string    // binary to run as workers
	Args   []string  // its arguments
	Output io.Writer // workers' stdout and stderr
	Log    zerolog.Logger
	// Ready is called once: with nil when the server serves, or the reason
	// it never will.
	Ready func(err error)
}

// slot is a worker id and what serves it.
type slot struct {
	id       int
	task     bool
	process  string     // a user process's name ("" for workers and task workers)
	files    []*os.File // BASE mode: this slot's SO_REUSEPORT sockets, one per listener
	cur      *proc      // the process serving the slot
	next     *proc      // a replacement being started (reload)
	old      []*proc    // replaced processes still draining
	restarts int
	backoff  time.Duration
	failing  string // why the last start failed (crash loop)
	timer    *time.Timer
}

// worker reports whether the slot is a worker (not a task worker or a user
// process): the only kind that serves connections.
func (sl *slot) worker() bool { return !sl.task && sl.process == "" }

// kind is the slot's kind as status shows it.
func (sl *slot) kind() string {
	switch {
	case sl.task:
		return "task"
	case sl.process != "":
		return "process"
	}
	return "worker"
}

// Master is the supervising process.
type Master struct {
	opts    Options
	log     zerolog.Logger
	spawner *spawner
	started time.Time

	addrs     []string
	passed    map[string][]*os.File // sockets passed by systemd, by name
	plain     []net.Listener        // PROCESS mode listeners
	slotFiles [][]*os.File          // BASE mode: per slot, per listener
	reactor   *reactor.Reactor
	backend   *procBackend

	mu       sync.Mutex
	slots    []*slot // workers then task workers
	ids      *idAllocator
	stopping bool
	reloadMu sync.Mutex // one reload at a time

	rooms     roomCounts
	ops       opsState
	taskRR    atomic.Uint32
	stopCh    chan stopReq
	done      chan struct{}
	closeOnce sync.Once
	ctl       *controlServer
	sec       security
}

type stopReq struct {
	graceful bool
	done     chan struct{}
}

// MaxProcessPackage is the largest --max-package-size in PROCESS mode: a
// request (its header block, up to 16 KiB, and body) or a WebSocket message
// crosses to its worker in one ipc frame.
const MaxProcessPackage = ipc.MaxPayload - 64<<10

// DefaultReactorNum is the master's GOMAXPROCS in PROCESS mode unless
// --reactor-num says otherwise: half the CPUs, at least one. The master's
// Go runtime shares the machine with the workers' (each of which gets its
// share of the CPUs, see forkd's worker runtime setting). With a P per CPU
// it wakes a second thread to steal every small burst of runnable
// goroutines; on the 2-core machine of docs/BENCHMARKS.md one P instead of
// two cut the master's CPU per request by about 10% (HTTP and WebSocket
// echo, in six of six alternating runs) at the same or a higher request
// rate, with 64 and with 256 clients.
func DefaultReactorNum() int { return max(1, runtime.NumCPU()/2) }

// ErrRunning is returned by Run when a server already runs in the run dir.
var ErrRunning = errors.New("server is already running")

// New checks options and returns a master ready to Run.
func New(o Options) (*Master, error) {
	if o.Mode != ModeProcess && o.Mode != ModeBase {
		return nil, fmt.Errorf("master: unknown mode %q (want process or base)", o.Mode)
	}
	if o.Workers < 1 {
		return nil, fmt.Errorf("master: --workers must be at least 1, got %d", o.Workers)
	}
	if o.Mode == ModeBase && o.Workers > reactor.MasterOwner {
		return nil, fmt.Errorf("master: BASE mode runs at most %d workers (connection ids name their worker in %d bits), got %d", reactor.MasterOwner, reactor.OwnerBits, o.Workers)
	}
	if o.IDNode < 0 || o.IDNode > reactor.MaxNode {
		return nil, fmt.Errorf("master: id node %d is outside 0..%d", o.IDNode, reactor.MaxNode)
	}
	if o.TaskWorkers < 0 {
		return nil, fmt.Errorf("master: --task-workers must not be negative")
	}
	switch o.Dispatch {
	case "", "fd", "round-robin", "ip", "idle":
	default:
		return nil, fmt.Errorf("master: unknown dispatch mode %q (want round-robin, fd, ip or idle)", o.Dispatch)
	}
	if o.ReactorNum < 0 {
		return nil, fmt.Errorf("master: --reactor-num must not be negative, got %d", o.ReactorNum)
	}
	if o.ReactorNum == 0 {
		o.ReactorNum = DefaultReactorNum()
	}
	if o.Mode == ModeProcess && o.MaxPackageSize > MaxProcessPackage {
		return nil, fmt.Errorf("master: --max-package-size %d is over %d, the most one ipc frame hands a PROCESS-mode worker", o.MaxPackageSize, MaxProcessPackage)
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if o.ReloadWait <= 0 {
		o.ReloadWait = 10 * time.Second
	}
	if o.WorkerTimeout < 0 || o.RequestTimeout < 0 {
		return nil, fmt.Errorf("master: --worker-timeout and --request-timeout must not be negative")
	}
	if o.WorkerTimeout == 0 {
		o.WorkerTimeout = DefaultWorkerTimeout
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.BusQueue <= 0 {
		o.BusQueue = 16 << 20
	}
	if o.Output == nil {
		o.Output = os.Stderr
	}
	m := &Master{opts: o, log: o.Log, stopCh: make(chan stopReq, 1), done: make(chan struct{})}
	return m, nil
}

// Run serves until ctx ends (stop now) or a stop command arrives, and
// returns once every worker is gone.
func (m *Master) Run(ctx context.Context) (err error) {
	o := &m.opts
	m.started = time.Now()
	ready := func(err error) {
		if o.Ready != nil {
			o.Ready(err)
			o.Ready = nil
		}
	}
	defer func() {
		if err != nil {
			ready(err)
		}
	}()
	if err := os.MkdirAll(o.RunDir, 0o755); err != nil {
		return fmt.Errorf("master: run dir: %w", err)
	}
	if err := CheckRunDir(o.RunDir); err != nil {
		return err
	}
	unlock, err := takePidFile(o.RunDir)
	if err != nil {
		return err
	}
	defer unlock()
	if m.ids, err = newIDAllocator(o.RunDir, m.log); err != nil {
		return err
	}
	raiseNoFile()
	if o.Mode == ModeProcess {
		runtime.GOMAXPROCS(o.ReactorNum)
	}
	m.spawner = newSpawner()

	if err := m.setupSecurity(); err != nil {
		return err
	}
	defer m.closeSecurity()
	go m.rotateTickets()
	if err := m.openListeners(); err != nil {
		return err
	}
	defer m.closeListeners()
	if err := m.startMetrics(); err != nil {
		return err
	}
	defer m.stopMetrics()

	m.ctl, err = listenControl(filepath.Join(o.RunDir, SocketName), m)
	if err != nil {
		return err
	}
	defer m.ctl.Close()
	if err := m.chownRunFiles(filepath.Join(o.RunDir, PidName), filepath.Join(o.RunDir, SocketName)); err != nil {
		return err
	}

	for i := 0; i < o.Workers+o.TaskWorkers+len(o.Processes); i++ {
		sl := &slot{id: i, task: i >= o.Workers && i < o.Workers+o.TaskWorkers}
		if i >= o.Workers+o.TaskWorkers {
			sl.process = o.Processes[i-o.Workers-o.TaskWorkers]
		}
		if o.Mode == ModeBase && sl.worker() {
			sl.files = m.slotFiles[i]
		}
		m.slots = append(m.slots, sl)
	}
	// Start every worker, then wait for all to be ready.
	var procs []*proc
	for _, sl := range m.slots {
		p, err := m.spawn(sl)
		if err != nil {
			m.killAll()
			return err
		}
		m.mu.Lock()
		sl.cur = p
		m.mu.Unlock()
		procs = append(procs, p)
	}
	for _, p := range procs {
		if err := m.waitReady(p); err != nil {
			m.killAll()
			return fmt.Errorf("worker %d failed to start: %w", p.slot.id, err)
		}
		if m.backend != nil && p.slot.worker() {
			m.backend.attach(p)
		}
	}
	if o.Mode == ModeProcess {
		m.serveReactor()
	}
	m.logReady()
	ready(nil)
	m.notifyReady()
	go m.watchdog()

	var req stopReq
	select {
	case <-ctx.Done():
	case req = <-m.stopCh:
	}
	m.shutdown(req.graceful)
	if req.done != nil {
		close(req.done)
	}
	return nil
}

func (m *Master) logReady() {
	o := &m.opts
	for i, l := range o.Listeners {
		proto := l.Protocol
		if l.Protocol == "http" && l.Upgrade {
			proto = "http+websocket"
		}
		m.log.Info().Str("listener", l.Name).Str("addr", m.addrs[i]).Str("protocol", proto).Bool("tls", m.listenerTLS(i)).Msg("listening")
	}
	m.log.Info().Str("mode", o.Mode).Int("workers", o.Workers).Int("task_workers", o.TaskWorkers).
		Int("master_pid", os.Getpid()).Str("dispatch", m.dispatchName()).Msg("server ready")
}

func (m *Master) dispatchName() string {
	if m.opts.Mode == ModeBase {
		return "kernel (SO_REUSEPORT)"
	}
	if m.opts.Dispatch == "" {
		return "fd"
	}
	return m.opts.Dispatch
}

// waitReady waits for p's Ready, its failure, or the ready timeout.
func (m *Master) waitReady(p *proc) error {
	select {
	case err := <-p.ready:
		return err
	case <-time.After(m.opts.ReadyTimeout):
		p.cmd.Process.Kill()
		return fmt.Errorf("not ready after %s", m.opts.ReadyTimeout)
	}
}

// Stop asks Run to stop (gracefully or now) and waits until it has.
func (m *Master) Stop(graceful bool) {
	done := make(chan struct{})
	select {
	case m.stopCh <- stopReq{graceful: graceful, done: done}:
		<-done
	default: // a stop is already under way
		<-m.done
	}
}

// shutdown stops every worker: gracefully (drain within ReloadWait) or now.
func (m *Master) shutdown(graceful bool) {
	m.mu.Lock()
	m.stopping = true
	var procs []*proc
	for _, sl := range m.slots {
		if sl.timer != nil {
			sl.timer.Stop()
		}
		for _, p := range append([]*proc{sl.cur, sl.next}, sl.old...) {
			if p != nil {
				procs = append(procs, p)
			}
		}
	}
	m.mu.Unlock()
	if m.backend != nil {
		m.backend.wakeAll()
	}
	m.log.Info().Bool("graceful", graceful).Msg("stopping")
	m.notify("STOPPING=1\nSTATUS=stopping")
	wait := m.opts.ReloadWait
	if m.reactor != nil {
		if graceful {
			m.reactor.Drain()
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			m.reactor.Wait(ctx)
			cancel()
		}
		m.reactor.Close()
	}
	code := uint16(worker.DrainNow)
	if graceful {
		code = worker.DrainStop
	} else {
		wait = 2 * time.Second
	}
	if graceful {
		// Workers first: the requests they finish may still hand work to
		// the task workers, which drain once the workers are gone; user
		// processes last (they may push to connections until then).
		var workers, tasks, users []*proc
		for _, p := range procs {
			switch {
			case p.slot.task:
				tasks = append(tasks, p)
			case p.slot.process != "":
				users = append(users, p)
			default:
				workers = append(workers, p)
			}
		}
		m.stopProcs(workers, code, wait)
		m.stopProcs(tasks, code, wait)
		m.stopProcs(users, code, wait)
	} else {
		// Now, but user processes still last.
		var rest, users []*proc
		for _, p := range procs {
			if p.slot.process != "" {
				users = append(users, p)
			} else {
				rest = append(rest, p)
			}
		}
		m.stopProcs(rest, code, wait)
		m.stopProcs(users, code, wait)
	}
	close(m.done)
	m.log.Info().Msg("server stopped")
}

// stopProcs drains procs (worker.Drain* code) and waits for them to exit,
// killing those still there after wait (plus a margin for OnWorkerStop).
func (m *Master) stopProcs(procs []*proc, code uint16, wait time.Duration) {
	for _, p := range procs {
		p.intended.Store(true)
		p.state.Store(StateDraining)
		m.drain(p, code)
	}
	deadline := time.After(wait + 2*time.Second)
	for _, p := range procs {
		select {
		case <-p.exited:
		case <-deadline:
			m.log.Warn().Int("worker", p.slot.id).Int("pid", p.pid).Msg("worker did not stop in time, killing")
			p.cmd.Process.Kill()
			<-p.exited
		}
	}
}

func (m *Master) killAll() {
	m.mu.Lock()
	m.stopping = true
	var procs []*proc
	for _, sl := range m.slots {
		if sl.cur != nil {
			procs = append(procs, sl.cur)
		}
	}
	m.mu.Unlock()
	for _, p := range procs {
		p.intended.Store(true)
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// exited is called once a worker process has been reaped.
func (m *Master) exited(p *proc) {
	sl := p.slot
	m.mu.Lock()
	current := sl.cur == p
	stopping := m.stopping
	m.mu.Unlock()
	if p.intended.Load() || stopping || !current {
		m.log.Debug().Int("worker", sl.id).Int("pid", p.pid).Msg("worker exited")
		return
	}
	up := time.Since(p.start)
	why := exitString(p.exitErr)
	if reason, _ := p.startErr.Load().(string); reason != "" {
		why = reason + " (" + why + ")"
	}
	m.log.Error().Int("worker", sl.id).Int("pid", p.pid).Str("status", why).
		Dur("uptime", up).Msg("worker exited unexpectedly")
	m.respawnLater(sl, up, why)
}

// respawnLater replaces a dead worker with the same id, backing off when it
// keeps dying young (a crash loop), and logging that it does.
func (m *Master) respawnLater(sl *slot, up time.Duration, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopping {
		return
	}
	if up < 2*time.Second {
		if sl.backoff == 0 {
			sl.backoff = 100 * time.Millisecond
		} else if sl.backoff *= 2; sl.backoff > 10*time.Second {
			sl.backoff = 10 * time.Second
		}
		sl.failing = why
		m.log.Warn().Int("worker", sl.id).Dur("backoff", sl.backoff).Str("last_exit", why).Msg("worker crash loop: backing off")
	} else {
		sl.backoff = 0
		sl.failing = ""
	}
	sl.timer = time.AfterFunc(sl.backoff, func() { m.respawn(sl) })
}

func (m *Master) respawn(sl *slot) {
	// Not while a reload or max-request replacement runs: it may be
	// replacing this very slot, and then there is nothing left to do.
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	m.mu.Lock()
	if m.stopping || (sl.cur != nil && sl.cur.State() != StateStopped) {
		m.mu.Unlock()
		return
	}
	sl.restarts++
	m.mu.Unlock()
	p, err := m.spawn(sl)
	if err != nil {
		m.log.Error().Err(err).Int("worker", sl.id).Msg("respawn failed")
		m.respawnLater(sl, 0, err.Error())
		return
	}
	m.mu.Lock()
	sl.cur = p
	m.mu.Unlock()
	if err := m.waitReady(p); err != nil {
		m.log.Error().Err(err).Int("worker", sl.id).Int("pid", p.pid).Msg("replacement worker failed to start")
		return // its exit schedules the next try
	}
	m.mu.Lock()
	sl.failing = ""
	m.mu.Unlock()
	if m.backend != nil && sl.worker() {
		m.backend.attach(p)
	}
	m.log.Info().Int("worker", sl.id).Int("pid", p.pid).Int("restarts", sl.restarts).Msg("worker replaced")
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// Done is closed when the master has stopped.
func (m *Master) Done() <-chan struct{} { return m.done }

// Addrs returns the listeners' bound addresses, in the order of
// Options.Listeners, once Run has opened them (from Ready on).
func (m *Master) Addrs() []string { return append([]string(nil), m.addrs...) }
