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

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// Process roles, carried in EnvRole.
const (
	EnvRole     = "FORKD_ROLE"
	EnvAPIToken = "FORKD_API_TOKEN"
	RoleWorker  = "worker"
	RoleMaster  = "master" // a daemonized master
	ModeProcess = ipc.ModeProcess
	ModeBase    = ipc.ModeBase
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
	RoomHistory    int                 // --room-history: messages kept per room (0: none)
	RoomHistoryTTL time.Duration       // --room-history-ttl: none kept longer (0: no limit)
	TicketRotate   time.Duration       // TLS session ticket key lifetime as the newest; 0: DefaultTicketRotate
	Credential     *syscall.Credential // --user/--group: workers run as this; nil: as the master
	// IDNode is this server's node number in connection ids (0: a single
	// server; a cluster gives each server its own, 0..reactor.MaxNode).
	IDNode int
	// Cluster joins this server to a cluster on NATS (docs/cluster.md);
	// nil: a single server, no NATS in the process. The node number it
	// gets at join replaces IDNode.
	Cluster *cluster.Config

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
	timer    stopper
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
	starter starter // how worker processes start (osproc.go)
	clock   clock
	started time.Time

	addrs     []string
	passed    map[string][]*os.File // sockets passed by systemd, by name
	notifyBad atomic.Bool           // the last sd_notify failed (logged once: systemd.go)
	plain     []net.Listener        // PROCESS mode listeners
	slotFiles [][]*os.File          // BASE mode: per slot, per listener
	reactor   *reactor.Reactor      // PROCESS mode (processMode)
	backend   *procBackend          // PROCESS mode (processMode)
	mode      mode                  // what differs between the modes (mode.go)
	bus       Bus                   // where bus operations go: the mode's, or a cluster's around it
	dispatch  Dispatch
	cluster   *cluster.Node // nil without --cluster/--cluster-embed
	nodeNum   atomic.Int32  // node bits of new ids (IDNode, or the cluster's number)
	listening atomic.Bool   // the reactor exists (cluster.go: SetNode may reach it)

	mu       sync.Mutex
	slots    []*slot // workers then task workers
	ids      *idAllocator
	stopping bool
	reloadMu sync.Mutex // one reload at a time

	rooms     roomCounts
	hist      history // users.go, history.go
	live      live    // cluster_users.go: other nodes' room messages
	ops       opsState
	taskRR    atomic.Uint32
	stopCh    chan stopReq
	done      chan struct{}
	closeOnce sync.Once
	shut      atomic.Bool // shutdown has begun
	// wg joins every goroutine the master starts (see m.goJoin); Run
	// waits for it last. joined (under mu) is set then: no process starts
	// after it.
	wg     sync.WaitGroup
	joined bool
	ctl    *controlServer
	sec    security

	// clusterJoined is cluster once cluster.Start returned, for what NATS
	// callbacks may run before it did (cluster_users.go).
	clusterJoined atomic.Pointer[cluster.Node]
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
	dispatch, err := ParseDispatch(o.Dispatch)
	if err != nil {
		return nil, err
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
	m := &Master{opts: o, log: o.Log, dispatch: dispatch, clock: realClock{}, stopCh: make(chan stopReq, 1), done: make(chan struct{})}
	m.mode = newMode(m)
	m.bus = m.mode
	m.nodeNum.Store(int32(o.IDNode))
	m.initUsers()
	return m, nil
}

// stopRequest waits for the end of ctx or a Stop, and says which stop.
func (m *Master) stopRequest(ctx context.Context) stopReq {
	select {
	case <-ctx.Done():
		return stopReq{graceful: errors.Is(context.Cause(ctx), ErrStopGraceful)}
	case req := <-m.stopCh:
		return req
	}
}

// goJoin runs f in a goroutine that Run waits for before it returns.
func (m *Master) goJoin(f func()) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
}

// join waits for every goroutine goJoin started, once no new process can
// start.
func (m *Master) join() {
	m.mu.Lock()
	m.joined = true
	m.mu.Unlock()
	m.wg.Wait()
}

// ErrStopGraceful, as the cause of Run's context (context.WithCancelCause),
// asks for a graceful stop; any other end of the context stops now. The
// CLI turns SIGQUIT into the one and SIGINT/SIGTERM into the other.
var ErrStopGraceful = errors.New("master: graceful stop")

// Run serves until ctx ends (see ErrStopGraceful) or a stop command
// arrives, and returns once every worker, and every goroutine it started,
// is gone.
func (m *Master) Run(ctx context.Context) (err error) {
	o := &m.opts
	m.started = m.clock.Now()
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
	defer m.join() // last: nothing the master started outlives Run
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
	m.checkNoFile()
	if o.Mode == ModeProcess {
		runtime.GOMAXPROCS(o.ReactorNum)
	}
	if m.starter == nil {
		m.starter = newExecStarter()
	}

	if err := m.setupSecurity(); err != nil {
		return err
	}
	defer m.closeSecurity()
	m.goJoin(m.rotateTickets)
	if err := m.startCluster(); err != nil {
		return err
	}
	defer m.stopCluster()
	if err := m.openListeners(); err != nil {
		return err
	}
	defer m.closeListeners()
	m.listenersOpen()
	if err := m.startMetrics(); err != nil {
		return err
	}
	defer m.stopMetrics()

	m.ctl, err = listenControl(filepath.Join(o.RunDir, SocketName), m)
	if err != nil {
		return err
	}
	defer m.ctl.Close()
	defer m.endStops() // before the wait for every control connection
	if err := m.chownRunFiles(filepath.Join(o.RunDir, PidName), filepath.Join(o.RunDir, SocketName)); err != nil {
		return err
	}

	m.slots = m.newSlots()
	if err := m.startAll(); err != nil {
		return err
	}
	m.mode.serve()
	m.logReady()
	ready(nil)
	m.notifyReady()
	m.goJoin(m.watchdog)

	req := m.stopRequest(ctx)
	m.shutdown(req.graceful)
	if req.done != nil {
		close(req.done)
	}
	return nil
}

// newSlots makes the slots: workers, then task workers, then user processes.
func (m *Master) newSlots() []*slot {
	o := &m.opts
	var slots []*slot
	for i := 0; i < o.Workers+o.TaskWorkers+len(o.Processes); i++ {
		sl := &slot{id: i, task: i >= o.Workers && i < o.Workers+o.TaskWorkers}
		if i >= o.Workers+o.TaskWorkers {
			sl.process = o.Processes[i-o.Workers-o.TaskWorkers]
		}
		if sl.worker() && m.slotFiles != nil { // BASE: the slot's own sockets
			sl.files = m.slotFiles[i]
		}
		slots = append(slots, sl)
	}
	return slots
}

func (m *Master) logReady() {
	o := &m.opts
	if m.cluster != nil {
		m.cluster.Announce()
	}
	for i, l := range o.Listeners {
		proto := l.Protocol
		if l.Protocol == "http" && l.Upgrade {
			proto = "http+websocket"
		}
		m.log.Info().Str("listener", l.Name).Str("addr", m.addrs[i]).Str("protocol", proto).Bool("tls", m.listenerTLS(i)).Msg("listening")
	}
	m.log.Info().Str("mode", o.Mode).Int("workers", o.Workers).Int("task_workers", o.TaskWorkers).
		Int("master_pid", os.Getpid()).Str("dispatch", m.mode.dispatchName()).Msg("server ready")
}

// Stop asks Run to stop (gracefully or now) and waits until it has.
func (m *Master) Stop(graceful bool) {
	done := make(chan struct{})
	select {
	case m.stopCh <- stopReq{graceful: graceful, done: done}:
		// Run takes one request: a second one queued behind another stop
		// (or a signal's) is never read, and waiting only for its done
		// would hold Run, which waits for every control connection.
		select {
		case <-done:
		case <-m.done:
		}
	default: // a stop is already under way
		<-m.done
	}
}

// endStops marks the master done when Run returns without a shutdown (a
// start that failed): a stop request it never took (`server stop` during
// the start) must end, or its control connection, which Run waits for,
// would hold Run for ever.
func (m *Master) endStops() {
	if m.shut.CompareAndSwap(false, true) {
		close(m.done)
	}
}

// Done is closed when the master has stopped.
func (m *Master) Done() <-chan struct{} { return m.done }

// Addrs returns the listeners' bound addresses, in the order of
// Options.Listeners, once Run has opened them (from Ready on).
func (m *Master) Addrs() []string { return append([]string(nil), m.addrs...) }
