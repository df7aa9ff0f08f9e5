package reactor

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd/internal/stall"
	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/metrics"
)

// Protocol is what a listener speaks.
type Protocol int

// Protocols.
const (
	HTTP      Protocol = iota // HTTP/1.1; WebSocket upgrades when Upgrade is set
	WebSocket                 // WebSocket only: plain requests get 426
)

// ProtocolOf is the Protocol a listener's configured name ("http",
// "websocket") stands for.
func ProtocolOf(name string) Protocol {
	if name == "websocket" {
		return WebSocket
	}
	return HTTP
}

// String names the protocol.
func (p Protocol) String() string {
	if p == WebSocket {
		return "websocket"
	}
	return "http"
}

// Listener describes one port.
type Listener struct {
	Name     string
	Index    int
	Protocol Protocol
	Upgrade  bool // an HTTP listener that also accepts WebSocket upgrades
	TLS      *TLS // nil: plain TCP; else TLS is terminated here (see tls.go)
}

// Handler receives what the reactor has read. Threading: HTTP runs in the
// connection's fasthttp goroutine and may block (that connection waits);
// Open, Message and Close run in order (Open in the upgrading goroutine,
// before the WebSocket's read goroutine starts; Message and Close in the
// read goroutine), and blocking them pauses reading that connection (TCP
// back-pressure).
// BufferFull and BufferDrain run in whichever goroutine noticed; they must
// not block. RoomChanged reports a room's new local member count.
type Handler interface {
	HTTP(l *Listener, ctx *fasthttp.RequestCtx)
	Open(c *Conn)
	Message(c *Conn, op int, data []byte)
	Close(c *Conn, code int, reason string)
	BufferFull(c *Conn)
	BufferDrain(c *Conn)
	RoomChanged(room string, members int)
}

// Options bound what one reactor holds. Zero values take the defaults.
type Options struct {
	Node, Owner    uint16        // encoded in connection ids (see MakeID)
	FirstLease     uint64        // first sequence of the first id lease (0: ask Lease)
	Lease          LeaseFunc     // further id leases; nil: from a counter of this reactor's (tests: no stale-id safety across restarts)
	MaxPackageSize int           // request body / WebSocket message; default 10 MiB
	MaxSendBuffer  int           // queued output per connection; default 1 MiB
	MaxHeaderSize  int           // HTTP request header block; default 16 KiB (431 beyond)
	MaxConns       int           // beyond it: HTTP 503, WebSocket close 1013; 0 = unlimited
	HeartbeatIdle  time.Duration // close WebSockets (and idle keep-alive HTTP) silent this long; 0 = off
	ReadTimeout    time.Duration // whole request read (slowloris), the first from accept; default 15s
	IdleTimeout    time.Duration // keep-alive idle; default 60s
	WriteTimeout   time.Duration // one write; default 15s
	// AllowedOrigins widens the WebSocket Origin check (see origin.go):
	// "*", exact origins, or "https://*.example.com" patterns.
	AllowedOrigins []string
	// PerIP, when set, bounds connections per client address (see
	// limit.go): beyond it, HTTP 503 and WebSocket close 1013.
	PerIP IPLimiter
	Log   zerolog.Logger
	// Metrics receives the reactor's counters (connections, HTTP answers
	// and their latency, WebSocket traffic, full send buffers); nil: a
	// private set nobody reads.
	Metrics *metrics.Proc
}

func (o *Options) defaults() {
	if o.MaxPackageSize <= 0 {
		o.MaxPackageSize = 10 << 20
	}
	if o.MaxSendBuffer <= 0 {
		o.MaxSendBuffer = 1 << 20
	}
	if o.MaxHeaderSize <= 0 {
		o.MaxHeaderSize = 16 << 10
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 15 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	// --heartbeat-idle closes every connection silent that long (Swoole's
	// heartbeat_idle_time): a keep-alive HTTP connection between requests
	// too, when it is shorter than --idle-timeout.
	if o.HeartbeatIdle > 0 && o.HeartbeatIdle < o.IdleTimeout {
		o.IdleTimeout = o.HeartbeatIdle
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 15 * time.Second
	}
	if o.Metrics == nil {
		o.Metrics = new(metrics.Proc)
	}
}

// Reactor holds connections for one process.
type Reactor struct {
	opts Options
	h    Handler
	log  zerolog.Logger
	m    *metrics.Proc
	ids  idSource
	node atomic.Uint32 // node bits of new ids (SetNode: a cluster assigns it at join)
	// paused tells the timeouts that the process did not run for a while
	// (ticked by sweep and by heartbeat).
	paused *stall.Watch

	mu    sync.RWMutex
	conns map[uint64]*Conn
	// swept is what sweep looks at: HTTP connections, and WebSockets
	// while a flusher writes to them (the only timeout a WebSocket has is
	// a stuck write). An idle WebSocket costs the sweep nothing.
	swept     map[*Conn]struct{}
	listeners []net.Listener
	nconns    atomic.Int64
	draining  atomic.Bool
	closed    atomic.Bool
	clock     atomic.Int64 // coarse unix nanos, advanced by sweep's ticker
	done      chan struct{}
	wg        sync.WaitGroup
	flushers  *Pool[*Conn] // goroutines writing queued WebSocket output

	rooms   rooms
	origins originPolicy
	ports   sync.Map // string port -> true: the ports this reactor serves
}

// New returns a reactor handing what it reads to h.
func New(opts Options, h Handler) *Reactor {
	opts.defaults()
	r := &Reactor{
		opts:   opts,
		paused: stall.New(sweepTick, pauseAfter),
		h:      h,
		log:    opts.Log,
		m:      opts.Metrics,
		conns:  make(map[uint64]*Conn),
		swept:  make(map[*Conn]struct{}),
		done:   make(chan struct{}),
		rooms:  rooms{m: make(map[string]map[*Conn]struct{})},
	}
	r.ids.lease = opts.Lease
	r.node.Store(uint32(opts.Node))
	if r.ids.lease == nil {
		var n uint64
		r.ids.lease = func() (uint64, error) { n++; return n * IDLease, nil }
	}
	if opts.FirstLease != 0 {
		r.ids.next, r.ids.end = opts.FirstLease, opts.FirstLease+IDLease
	}
	r.flushers = NewPool((*Conn).flush)
	r.origins = newOriginPolicy(opts.AllowedOrigins)
	if opts.HeartbeatIdle > 0 {
		r.wg.Add(1)
		go r.heartbeat()
	}
	r.clock.Store(time.Now().UnixNano())
	r.wg.Add(1)
	go r.sweep()
	return r
}

// sweep keeps the coarse clock and the HTTP timeouts. A connection past
// one gets a deadline in the past, so fasthttp's own read or write fails
// as if its deadline had passed: a request being read too long (slowloris)
// is answered 408, an idle keep-alive connection is closed, a stuck write
// is cut. The timeouts are thus enforced within a tick (100 ms). While
// the reactor drains, it also ends idle keep-alive connections.
// sweepTick is how often sweep runs and advances the coarse clock.
const sweepTick = 100 * time.Millisecond

// pauseAfter: a gap this long between two sweep ticks is a pause of the
// process (see stall); shorter ones, a loaded machine's, are not.
const pauseAfter = 2 * time.Second

func (r *Reactor) sweep() {
	defer r.wg.Done()
	t := time.NewTicker(sweepTick)
	defer t.Stop()
	past := time.Unix(0, 1)
	ticks := 0
	// After a pause of the whole process, a timeout counts again from
	// the resumption (see stall): what the clients sent meanwhile is
	// still unread, and what we wrote unsent, through no fault of theirs.
	paused := r.paused
	paused.Tick(time.Now())
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
			tm := time.Now()
			paused.Tick(tm)
			now := tm.UnixNano()
			r.clock.Store(now)
			readLimit := paused.Limit(now - int64(r.opts.ReadTimeout))
			idleLimit := paused.Limit(now - int64(r.opts.IdleTimeout))
			writeLimit := paused.Limit(now - int64(r.opts.WriteTimeout))
			// Once draining, keep-alive connections idle for a second end
			// (see Conn.shutIdle: without resetting them).
			shutLimit := int64(0)
			if r.draining.Load() {
				shutLimit = now - int64(time.Second)
			}
			peekLimit := now - int64(sweepTick)
			var reads, writes, shut, peek []*Conn
			r.eachSwept(func(c *Conn) {
				a, i := c.activeSince.Load(), c.idleSince.Load()
				switch {
				case a > 0 && a < readLimit && !c.handling.Load():
					reads = append(reads, c)
				case i > 0 && i < idleLimit:
					reads = append(reads, c)
				case i > 0 && i <= shutLimit:
					shut = append(shut, c)
				case i > 0 && i < peekLimit && c.peeked.Load() != i:
					c.peeked.Store(i) // once per idle spell
					peek = append(peek, c)
				}
				if w := c.writeSince.Load(); w > 0 && w < writeLimit {
					writes = append(writes, c)
				}
			})
			// A client that half-closed right after its last request: see
			// wakeIfPeerClosed. WebSockets waiting for their next message
			// are looked at every wsPeekTicks.
			if ticks++; ticks%wsPeekTicks == 0 {
				peek = r.wsToPeek(peek, now-int64(wsPeekTicks)*int64(sweepTick))
			}
			for _, c := range peek {
				c.wakeIfPeerClosed()
			}
			for _, c := range shut {
				if c.shutIdle() {
					c.idleSince.Store(idleShut)
				}
			}
			for _, c := range reads {
				c.activeSince.Store(0)
				if c.idleSince.Load() != idleShut {
					c.idleSince.Store(0)
				}
				_ = c.Conn.SetReadDeadline(past)
			}
			for _, c := range writes {
				_ = c.Conn.SetWriteDeadline(past)
			}
		}
	}
}

// wsPeekTicks: every this many sweep ticks, WebSockets that have waited
// for their next message at least as long are looked at once per wait
// (wakeIfPeerClosed).
const wsPeekTicks = 5

// wsToPeek appends to peek the plain TCP WebSockets whose read loop waits
// on the poller and has read no whole frame since before limit, each once
// per wait (per count of bytes read: a partial frame counts too).
func (r *Reactor) wsToPeek(peek []*Conn, limit int64) []*Conn {
	r.Each(func(c *Conn) {
		if !c.ws.Load() || c.rawc == nil || c.rstate.Load() != readWaiting || c.lastRead.Load() >= limit {
			return
		}
		if in := int64(c.in.Load()); c.peeked.Load() != in {
			c.peeked.Store(in)
			peek = append(peek, c)
		}
	})
	return peek
}

// Options returns the effective options.
func (r *Reactor) Options() Options { return r.opts }

// Conn returns the connection with id, or nil.
func (r *Reactor) Conn(id uint64) *Conn {
	r.mu.RLock()
	c := r.conns[id]
	r.mu.RUnlock()
	return c
}

// Push queues a message to connection id. See Conn.Send for outcomes.
func (r *Reactor) Push(id uint64, op int, data []byte) ipc.Outcome {
	c := r.Conn(id)
	if c == nil {
		return ipc.NoConnection
	}
	if len(data) > r.opts.MaxPackageSize {
		return ipc.TooLarge
	}
	return c.Send(op, data)
}

// CloseConn closes connection id after its queued output.
func (r *Reactor) CloseConn(id uint64, code int, reason string) ipc.Outcome {
	c := r.Conn(id)
	if c == nil {
		return ipc.NoConnection
	}
	return c.CloseWith(code, reason)
}

// Len reports how many connections are open.
func (r *Reactor) Len() int { return int(r.nconns.Load()) }

// SetNode sets the node number of the ids issued from now on (a cluster
// node learns its number when it joins, possibly after it started).
func (r *Reactor) SetNode(n uint16) { r.node.Store(uint32(n & MaxNode)) }

// Each calls f for every open connection (under a read lock: f must not block).
func (r *Reactor) Each(f func(c *Conn)) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, c := range r.conns {
		f(c)
	}
}

// eachSwept calls f for each connection sweep looks at (see swept).
func (r *Reactor) eachSwept(f func(c *Conn)) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for c := range r.swept {
		f(c)
	}
}

// sweepWrites puts a WebSocket in (on) or out of sweep's view while a
// flusher writes to it.
func (r *Reactor) sweepWrites(c *Conn, on bool) {
	r.mu.Lock()
	if on {
		if !c.closed.Load() {
			r.swept[c] = struct{}{}
		}
	} else {
		delete(r.swept, c)
	}
	r.mu.Unlock()
}

// StopAccepting closes the listeners; open connections go on.
func (r *Reactor) StopAccepting() {
	r.mu.Lock()
	lns := r.listeners
	r.listeners = nil
	r.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
}

// Drain starts a graceful stop: listeners close, every HTTP response from
// now on carries Connection: close (idle keep-alive connections are closed
// after a second of idleness), and WebSockets get close 1001 (going away)
// after their queued output (one whose close is already on its way, see
// Conn.ending, gets that close instead). Wait tells when all connections
// are gone.
func (r *Reactor) Drain() {
	if !r.draining.CompareAndSwap(false, true) {
		return
	}
	r.StopAccepting()
	r.Each(func(c *Conn) {
		if c.ws.Load() && !c.ending() {
			c.CloseWith(CloseGoingAway, "server going away")
		}
	})
}

// Draining reports whether Drain was called.
func (r *Reactor) Draining() bool { return r.draining.Load() }

// Wait blocks until no connection is open or ctx ends.
func (r *Reactor) Wait(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for r.nconns.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Close closes listeners and every connection now.
func (r *Reactor) Close() {
	if !r.closed.CompareAndSwap(false, true) {
		return
	}
	close(r.done)
	r.StopAccepting() // also orders spawnLinger's check of closed before the Wait below
	var all []*Conn
	r.Each(func(c *Conn) { all = append(all, c) })
	for _, c := range all {
		c.closeNow()
	}
	r.flushers.Stop()
	r.wg.Wait()
}

func (r *Reactor) heartbeat() {
	defer r.wg.Done()
	every := r.opts.HeartbeatIdle / 4
	if every < 50*time.Millisecond {
		every = 50 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	paused := r.paused // ticked by sweep too, every 100 ms
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
			now := time.Now()
			paused.Tick(now)
			// lastRead is on the coarse clock (up to a sweep tick behind):
			// allow for it, so that no connection is cut early.
			limit := paused.Limit(now.Add(-r.opts.HeartbeatIdle).UnixNano() - int64(sweepTick))
			var dead []*Conn
			r.Each(func(c *Conn) {
				if c.ws.Load() && c.lastRead.Load() < limit {
					dead = append(dead, c)
				}
			})
			for _, c := range dead {
				if c.ending() {
					continue // its close is on its way (see Conn.ending)
				}
				if c.CloseWith(CloseNormal, "heartbeat timeout") == ipc.OK {
					r.log.Info().Str("conn", FormatID(c.id)).Dur("idle", r.opts.HeartbeatIdle).Msg("heartbeat timeout")
				}
			}
		}
	}
}

type fasthttpLogger struct{ l zerolog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) { f.l.Debug().Msgf(format, args...) }
