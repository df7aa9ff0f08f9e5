package worker

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/metrics"
	"github.com/forkd/forkd/reactor"
)

// Options start a worker process.
type Options struct {
	Config    Config
	IPCIn     *os.File   // the pipe from the master (fd 3, see ipc.PipeFile)
	IPCOut    *os.File   // the pipe to the master (fd 4)
	Listeners []*os.File // BASE mode: one SO_REUSEPORT socket per listener
	App       App
	Log       zerolog.Logger
	// TLSConfigs are the program's own tls.Config per listener (nil
	// entries: defaults), the base of a BASE-mode worker's TLS.
	TLSConfigs []*tls.Config
}

// Worker is one running worker process.
type Worker struct {
	cfg Config
	app App
	log zerolog.Logger
	pid int

	out *ipc.Writer
	r   *reactor.Reactor // BASE mode only
	src source           // where connections come from (source.go)

	calls    calls
	node     atomic.Int32 // cluster node number of this server (0: none yet)
	requests atomic.Uint64
	inflight sync.WaitGroup
	retired  atomic.Bool
	draining atomic.Bool
	stopOnce sync.Once
	stop     chan drainReq

	mu    sync.Mutex
	conns map[uint64]*Conn // connections served here (PROCESS: by id; BASE: the reactor's)

	timers  timers
	tasks   taskState
	runners *reactor.Pool[job] // PROCESS: goroutines serving requests and connection events
	sec     workerSecrets
	m       metrics.Proc // this process's counters (see ops.go)
	ops     ops
	// Ext is the root package's handle for this worker.
	Ext any
}

// Drain codes (a Drain frame's code; see ipc.DrainReload).
const (
	DrainReload = ipc.DrainReload
	DrainStop   = ipc.DrainStop
	DrainNow    = ipc.DrainNow
)

type drainReq struct {
	reload bool
	wait   time.Duration
}

// ErrVersion is returned when the master speaks another ipc version.
var ErrVersion = errors.New("worker: ipc version mismatch")

// Run is the worker process's main. It returns when the worker has
// stopped: after a drain, or at once when the master goes away.
func Run(ctx context.Context, o Options) error {
	w := &Worker{
		cfg:   o.Config,
		app:   o.App,
		log:   o.Log,
		pid:   os.Getpid(),
		conns: make(map[uint64]*Conn),
		stop:  make(chan drainReq, 1),
	}
	w.src = ipcSource{w}
	w.calls.m = make(map[uint32]*call)
	w.runners = reactor.NewQueuedPool(w.runJob)
	w.timers.m = make(map[int]*timer)
	if w.cfg.CallTimeout <= 0 {
		w.cfg.CallTimeout = 5 * time.Second
	}
	defer o.IPCIn.Close()
	defer o.IPCOut.Close()
	w.out = ipc.NewWriter(o.IPCOut, 16<<20)
	rd := ipc.NewReader(reactor.NewPipeReader(o.IPCIn), ipc.MaxPayload)

	// Handshake: Hello, then Welcome or Error.
	hello := binary.LittleEndian.AppendUint16(nil, ipc.Version)
	hello = binary.LittleEndian.AppendUint32(hello, uint32(w.pid))
	hello = binary.LittleEndian.AppendUint16(hello, uint16(w.cfg.Slot))
	go w.out.Run()
	defer w.out.Close()
	if err := w.out.Send(&ipc.Header{Type: ipc.TypeHello, Arg: uint32(w.cfg.Slot)}, hello, nil); err != nil {
		return fmt.Errorf("worker: hello: %w", err)
	}
	f, err := rd.Next()
	if err != nil {
		return fmt.Errorf("worker: waiting for welcome: %w", err)
	}
	switch f.Type {
	case ipc.TypeWelcome:
	case ipc.TypeError:
		return fmt.Errorf("%w: %s", ErrVersion, f.Payload)
	default:
		return fmt.Errorf("worker: unexpected frame %d before welcome", f.Type)
	}
	if f, err = rd.Next(); err != nil {
		return fmt.Errorf("worker: waiting for secrets: %w", err)
	}
	if f.Type != ipc.TypeSecrets {
		return fmt.Errorf("worker: expected secrets after welcome, got frame %d", f.Type)
	}
	if err := w.setupSecurity(f.Payload, o.TLSConfigs); err != nil {
		w.out.Send(&ipc.Header{Type: ipc.TypeError}, []byte(err.Error()), nil)
		w.out.Close()
		<-w.out.Done()
		return err
	}
	rd.Shrink()

	w.node.Store(int32(w.cfg.IDNode))
	if w.cfg.Mode == ModeBase && !w.cfg.Task && w.cfg.Process == "" {
		w.r = reactor.New(reactor.Options{
			Node:           uint16(w.node.Load()),
			Owner:          uint16(w.cfg.Slot),
			FirstLease:     w.cfg.IDStart,
			Lease:          w.leaseIDs,
			MaxPackageSize: w.cfg.MaxPackageSize,
			MaxSendBuffer:  w.cfg.MaxSendBuffer,
			MaxConns:       w.cfg.MaxConns,
			HeartbeatIdle:  w.cfg.HeartbeatIdle,
			ReadTimeout:    w.cfg.ReadTimeout,
			IdleTimeout:    w.cfg.IdleTimeout,
			AllowedOrigins: w.cfg.AllowedOrigins,
			PerIP:          w.sec.perIP,
			Log:            w.log,
			Metrics:        &w.m,
		}, (*baseHandler)(w))
		w.src = reactorSource{w}
		defer w.r.Close()
	}

	if err := w.startApp(); err != nil {
		w.out.Send(&ipc.Header{Type: ipc.TypeError}, []byte(err.Error()), nil)
		w.out.Close()
		<-w.out.Done()
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	if err := w.src.serve(g, o.Listeners); err != nil {
		return err
	}
	if err := w.out.Send(&ipc.Header{Type: ipc.TypeReady}, nil, nil); err != nil {
		return err
	}
	w.log.Info().Msg("worker ready")

	readErr := make(chan error, 1)
	go func() { readErr <- w.readLoop(rd) }()
	// Nothing outlives Run: once stopped, the read loop ends on the
	// closed pipe and the listeners' serve loops on the closed reactor.
	readDone := false
	defer func() {
		o.IPCIn.Close()
		if !readDone {
			<-readErr
		}
		g.Wait()
	}()
	procEnded := w.startProcess(ctx)

	var dr drainReq
	select {
	case err := <-procEnded:
		// A user process's function returned (or panicked) while nobody
		// asked it to stop: exit non-zero, and the master starts it again
		// (backing off if it keeps ending young).
		w.log.Error().Err(err).Str("process", w.cfg.Process).Msg("process function ended, exiting for a restart")
		w.shutdown(false, 0)
		return fmt.Errorf("worker: process %s ended: %w", w.cfg.Process, err)
	case err := <-readErr:
		readDone = true
		// The master went away or broke the stream: stop now.
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
			w.log.Warn().Msg("master gone, exiting")
		} else {
			w.log.Error().Err(err).Msg("ipc stream failed, exiting")
		}
		w.shutdown(false, 0)
		return nil
	case dr = <-w.stop:
	case <-gctx.Done():
		if err := g.Wait(); err != nil {
			w.log.Error().Err(err).Msg("listener failed")
		}
		dr.wait = w.cfg.ReloadWait
	case <-ctx.Done():
		dr.wait = w.cfg.ReloadWait
	}
	w.shutdown(dr.reload, dr.wait)
	return nil
}

func (w *Worker) reactorListener(i int) *reactor.Listener {
	l := w.cfg.Listeners[i]
	return &reactor.Listener{Name: l.Name, Index: i, Protocol: reactor.ProtocolOf(l.Protocol), Upgrade: l.Upgrade, TLS: w.sec.tlsFor(i)}
}

func (w *Worker) startApp() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in OnWorkerStart: %v", p)
			w.log.Error().Str("stack", string(debug.Stack())).Msg(err.Error())
		}
	}()
	if err := w.app.WorkerStart(w); err != nil {
		return fmt.Errorf("OnWorkerStart: %w", err)
	}
	return nil
}

// shutdown drains within wait (0: now), runs OnWorkerStop, and flushes ipc.
func (w *Worker) shutdown(reload bool, wait time.Duration) {
	w.draining.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	w.src.drain(ctx) // wait 0: ctx has ended, nothing waits
	if wait > 0 {
		done := make(chan struct{})
		go func() { w.inflight.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			w.log.Warn().Msg("drain deadline reached with work in flight")
		}
	}
	w.stopProcess(wait)
	w.timers.clearAll()
	w.runners.Stop()
	func() {
		defer w.recoverLog("OnWorkerStop")
		w.app.WorkerStop(w, reload)
	}()
	w.src.close()
	w.out.Close()
	select {
	case <-w.out.Done():
	case <-time.After(time.Second):
	}
	w.log.Info().Bool("reload", reload).Msg("worker stopped")
}

func (w *Worker) recoverLog(where string) {
	if p := recover(); p != nil {
		w.log.Error().Str("stack", string(debug.Stack())).Str("in", where).Msgf("panic: %v", p)
	}
}

// readLoop handles frames from the master until the stream ends.
func (w *Worker) readLoop(rd *ipc.Reader) error {
	for {
		f, err := rd.Next()
		if err != nil {
			return err
		}
		if err := w.handle(f); err != nil {
			return err
		}
		rd.Shrink()
	}
}

func (w *Worker) handle(f ipc.Frame) error {
	switch f.Type {
	case ipc.TypeRequest:
		w.serveRequest(f)
	case ipc.TypeOpen, ipc.TypeResume, ipc.TypeMessage, ipc.TypeClosed, ipc.TypeBuffer:
		w.connEvent(f)
	case ipc.TypeResult, ipc.TypeTaskResult:
		w.calls.finish(f)
	case ipc.TypeSendFailed:
		w.sendFailed(f)
	case ipc.TypeSendAck:
		w.sendAck(f)
	case ipc.TypePush, ipc.TypeClose, ipc.TypeQuery, ipc.TypeJoin, ipc.TypeLeave, ipc.TypeBroadcast,
		ipc.TypeUID, ipc.TypeSession, ipc.TypeMembers, ipc.TypeRecover:
		w.serveBus(f)
	case ipc.TypeClusterNode:
		w.setNode(int(f.Arg))
	case ipc.TypePipe:
		data := append([]byte(nil), f.Payload...)
		from := int(f.Code)
		w.m.PipeRecv.Add(1)
		go func() {
			defer w.recoverLog("OnPipeMessage")
			w.app.PipeMessage(w, from, data)
		}()
	case ipc.TypeTask:
		w.serveTask(f)
	case ipc.TypePing:
		// Answered from the worker's event loop, not from this reader: a
		// PROCESS worker's pooled goroutines (those serving requests and
		// connection events), a goroutine of its own otherwise, then
		// through the ipc writer. The master's watchdog judges the answer.
		if w.r == nil && !w.cfg.Task {
			w.spawn(job{ping: f.Seq})
		} else {
			go w.pong(f.Seq)
		}
	case ipc.TypeStats:
		b, _ := json.Marshal(w.Stats())
		w.out.Send(&ipc.Header{Type: ipc.TypeStats, Seq: f.Seq}, b, nil)
	case ipc.TypeConns:
		// Not on the read loop: listing and encoding 15,000 connections
		// takes tens of milliseconds, which every frame behind it would wait.
		go func(seq uint32) {
			b, _ := json.Marshal(w.connInfos())
			w.out.Send(&ipc.Header{Type: ipc.TypeConns, Seq: seq}, b, nil)
		}(f.Seq)
	case ipc.TypeMetrics:
		go w.sendMetrics(f.Seq) // gathering the runtime's figures takes a moment: not on the read loop
	case ipc.TypeReopenLogs:
		w.reopenLogs(f.Seq)
	case ipc.TypeDrain:
		dr := drainReq{reload: f.Code == DrainReload}
		if f.Code != DrainNow {
			dr.wait = w.cfg.ReloadWait
		}
		w.stopOnce.Do(func() { w.stop <- dr })
	case ipc.TypeSecrets:
		w.updateSecrets(f.Payload)
	case ipc.TypeError:
		return fmt.Errorf("worker: master says: %s", f.Payload)
	default:
		return fmt.Errorf("worker: unknown frame type %d", f.Type)
	}
	return nil
}

func (w *Worker) pong(seq uint32) {
	w.out.SendWait(&ipc.Header{Type: ipc.TypePong, Seq: seq}, nil, nil)
}

// Stats is what a worker reports for `server status`.
type Stats = ipc.WorkerStats

// Stats returns this worker's counters.
func (w *Worker) Stats() Stats {
	s := Stats{Requests: w.requests.Load(), BusPending: w.out.Pending(), BusDropped: w.out.Dropped(), TasksDone: w.tasks.done.Load()}
	s.Connections = w.src.count()
	w.timers.mu.Lock()
	s.Timers = len(w.timers.m)
	w.timers.mu.Unlock()
	w.calls.mu.Lock()
	s.Calls = len(w.calls.m)
	w.calls.mu.Unlock()
	return s
}

func (w *Worker) connInfos() []reactor.Info {
	return w.src.infos()
}

// counted is called once per request or message served; at MaxRequest the
// worker asks its master to be replaced (gracefully).
func (w *Worker) counted() {
	n := w.requests.Add(1)
	if w.cfg.MaxRequest > 0 && n >= uint64(w.cfg.MaxRequest) && w.retired.CompareAndSwap(false, true) {
		w.log.Info().Uint64("requests", n).Msg("max-request reached, asking to be replaced")
		w.out.Send(&ipc.Header{Type: ipc.TypeRetire}, nil, nil)
	}
}

// ID is the worker's stable id (0..N-1; task workers N..N+T-1).
func (w *Worker) ID() int { return w.cfg.Slot }

// Pid is the worker's process id.
func (w *Worker) Pid() int { return w.pid }

// Config returns the worker's configuration.
func (w *Worker) Config() Config { return w.cfg }

// Log returns the worker's logger (role, worker id and pid attached).
func (w *Worker) Log() *zerolog.Logger { return &w.log }

// IsTask reports whether this is a task worker.
func (w *Worker) IsTask() bool { return w.cfg.Task }
