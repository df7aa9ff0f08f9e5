package reactor

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

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
// Open, Message and Close run in the WebSocket's read goroutine, in order,
// and blocking them pauses reading that connection (TCP back-pressure).
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
	HeartbeatIdle  time.Duration // close WebSockets silent this long; 0 = off
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

	mu        sync.RWMutex
	conns     map[uint64]*Conn
	listeners []net.Listener
	servers   []*fasthttp.Server
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
		opts:  opts,
		h:     h,
		log:   opts.Log,
		m:     opts.Metrics,
		conns: make(map[uint64]*Conn),
		done:  make(chan struct{}),
		rooms: rooms{m: make(map[string]map[*Conn]struct{})},
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
func (r *Reactor) sweep() {
	defer r.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	past := time.Unix(0, 1)
	for {
		select {
		case <-r.done:
			return
		case tm := <-t.C:
			now := tm.UnixNano()
			r.clock.Store(now)
			readLimit := now - int64(r.opts.ReadTimeout)
			idleLimit := now - int64(r.opts.IdleTimeout)
			writeLimit := now - int64(r.opts.WriteTimeout)
			// Once draining, keep-alive connections idle for a second end
			// (see Conn.shutIdle: without resetting them).
			shutLimit := int64(0)
			if r.draining.Load() {
				shutLimit = now - int64(time.Second)
			}
			var reads, writes, shut []*Conn
			r.Each(func(c *Conn) {
				a, i := c.activeSince.Load(), c.idleSince.Load()
				switch {
				case a > 0 && a < readLimit && !c.handling.Load():
					reads = append(reads, c)
				case i > 0 && i < idleLimit:
					reads = append(reads, c)
				case i > 0 && i <= shutLimit:
					shut = append(shut, c)
				}
				if w := c.writeSince.Load(); w > 0 && w < writeLimit {
					writes = append(writes, c)
				}
			})
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

// Options returns the effective options.
func (r *Reactor) Options() Options { return r.opts }

type listener struct {
	net.Listener
	r *Reactor
	l *Listener
}

func (ln *listener) Accept() (net.Conn, error) {
	r := ln.r
	for {
		nc, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		id, err := r.newID()
		if err != nil {
			// Without an id the connection cannot be served: refuse it
			// and go on accepting (the next lease may come through).
			r.log.Error().Err(err).Str("remote", nc.RemoteAddr().String()).Msg("connection refused")
			nc.Close()
			continue
		}
		c := &Conn{
			Conn:     nc,
			id:       id,
			r:        r,
			listener: ln.l,
			since:    time.Now(),
		}
		c.Slot.Store(-1)
		r.m.ConnsAccepted.Add(1)
		r.m.ConnsOpen.Add(1)
		n := r.nconns.Add(1)
		if r.opts.MaxConns > 0 && n > int64(r.opts.MaxConns) {
			c.over = true
		}
		if lim := r.opts.PerIP; lim != nil && !c.over {
			c.ip = remoteIP(nc)
			if lim.Acquire(c.ip) {
				c.ipHeld = true
			} else {
				c.over, c.overIP = true, true
			}
		}
		if ln.l.TLS != nil {
			// The handshake runs on the connection's first read, in its own
			// goroutine; a client that stalls it is cut by the read timeout.
			c.Conn = wrapTLS(nc, ln.l.TLS)
		}
		r.mu.Lock()
		r.conns[c.id] = c
		r.mu.Unlock()
		return c, nil
	}
}

// newID returns a fresh connection id from the reactor's leases, skipping
// one still in use (which only a wrapped sequence can meet; ids come from
// one source, so no other accept can take it before it is entered).
func (r *Reactor) newID() (uint64, error) {
	for {
		seq, err := r.ids.take()
		if err != nil {
			return 0, err
		}
		id := MakeID(uint16(r.node.Load()), r.opts.Owner, seq)
		r.mu.RLock()
		_, used := r.conns[id]
		r.mu.RUnlock()
		if !used {
			return id, nil
		}
	}
}

func (r *Reactor) forget(c *Conn) {
	r.mu.Lock()
	delete(r.conns, c.id)
	r.mu.Unlock()
	r.nconns.Add(-1)
	if c.ipHeld {
		r.opts.PerIP.Release(c.ip)
	}
	r.m.ConnsOpen.Add(-1)
	r.leaveAll(c)
}

// Serve accepts on ln until it is closed (by Drain or Close, then nil).
func (r *Reactor) Serve(ln net.Listener, l *Listener) error {
	s := &fasthttp.Server{
		Handler: r.handler(l),
		Name:    "forkd",
		// No ReadTimeout, IdleTimeout or WriteTimeout here: the sweeper
		// keeps them (see sweep) without a deadline update per request.
		MaxRequestBodySize:            r.opts.MaxPackageSize,
		ReadBufferSize:                r.opts.MaxHeaderSize,
		DisablePreParseMultipartForm:  true,
		NoDefaultDate:                 false,
		CloseOnShutdown:               true,
		DisableHeaderNamesNormalizing: false,
		Logger:                        fasthttpLogger{r.log},
		ErrorHandler:                  r.errorHandler,
		ConnState:                     r.connState,
		// A hijacked (upgraded) connection stays ours after the upgrade
		// handler returns: serveWS may return while the connection's
		// writer is still flushing (it closes the socket itself, a moment
		// later). By default fasthttp would close it at once and recycle
		// the wrapper the WebSocket writes through, so that a late write
		// found a nil connection (a panic that took the process down) or,
		// had the wrapper been handed to the next upgrade, another
		// client's socket.
		KeepHijackedConns: true,
	}
	r.mu.Lock()
	if r.closed.Load() || r.draining.Load() {
		r.mu.Unlock()
		ln.Close()
		return nil
	}
	r.listeners = append(r.listeners, ln)
	r.servers = append(r.servers, s)
	if _, port, err := net.SplitHostPort(ln.Addr().String()); err == nil {
		r.ports.Store(port, true)
	}
	r.mu.Unlock()
	err := s.Serve(&listener{Listener: ln, r: r, l: l})
	if r.draining.Load() || r.closed.Load() || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (r *Reactor) connState(nc net.Conn, st fasthttp.ConnState) {
	c, ok := nc.(*Conn)
	if !ok {
		return
	}
	// Atomics on the connection, not a map: this runs twice per request.
	now := r.clock.Load()
	switch st {
	case fasthttp.StateNew, fasthttp.StateActive: // reading a request
		c.activeSince.Store(now)
		if c.idleSince.Load() != idleShut {
			c.idleSince.Store(0)
		}
		if st == fasthttp.StateNew {
			c.hdr.reset(hdrScanning)
		} else {
			c.hdr.active()
		}
	case fasthttp.StateIdle:
		c.activeSince.Store(0)
		if c.idleSince.Load() != idleShut {
			c.idleSince.Store(now)
		}
		c.hdr.reset(hdrWaitPeek)
	case fasthttp.StateHijacked, fasthttp.StateClosed:
		c.activeSince.Store(0)
		if c.idleSince.Load() != idleShut {
			c.idleSince.Store(0)
		}
	}
}

// errorHandler answers what fasthttp could not parse, once, with the
// protocol-correct status, and logs it once.
func (r *Reactor) errorHandler(ctx *fasthttp.RequestCtx, err error) {
	if plainOnTLS(err) {
		r.log.Warn().Str("remote", ctx.RemoteAddr().String()).Msg("bad request: plain HTTP on a TLS port")
		return
	}
	status, msg := fasthttp.StatusBadRequest, "Bad Request"
	var te interface{ Timeout() bool }
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		status, msg = fasthttp.StatusRequestEntityTooLarge, "Request Entity Too Large"
	case errors.As(err, &small):
		status, msg = fasthttp.StatusRequestHeaderFieldsTooLarge, "Request Header Fields Too Large"
	case errors.As(err, &te) && te.Timeout():
		status, msg = fasthttp.StatusRequestTimeout, "Request Timeout"
	}
	r.log.Warn().Int("status", status).Str("remote", ctx.RemoteAddr().String()).Err(err).Msg("bad request")
	ctx.Error(msg, status)
	ctx.SetConnectionClose()
	// The client may still be sending (the rest of a body too large, say):
	// close lingering, so that it reads this answer instead of a reset.
	if c, ok := ctx.Conn().(*Conn); ok {
		c.lingerOnClose.Store(true)
	}
	r.m.HTTPDone(status, time.Since(ctx.Time()))
}

// refuseRequest answers a request that fails checkRequest, and closes.
func (r *Reactor) refuseRequest(ctx *fasthttp.RequestCtx, c *Conn, status int, msg string) {
	r.log.Warn().Int("status", status).Str("remote", ctx.RemoteAddr().String()).Str("reason", msg).Msg("bad request")
	ctx.Error(msg, status)
	ctx.SetConnectionClose()
	if c != nil {
		c.lingerOnClose.Store(true)
	}
}

func (r *Reactor) handler(l *Listener) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if !r.serve(l, ctx) {
			// Counted here, with atomics only: the metrics cost a request
			// one clock read and no lock or allocation.
			r.m.HTTPDone(ctx.Response.StatusCode(), time.Since(ctx.Time()))
		}
	}
}

// serve answers one request; true when it became a WebSocket (counted as a
// connection, not a request).
func (r *Reactor) serve(l *Listener, ctx *fasthttp.RequestCtx) (upgraded bool) {
	c, _ := ctx.Conn().(*Conn)
	if status, msg := checkRequest(ctx); status != 0 {
		r.refuseRequest(ctx, c, status, msg)
		return false
	}
	upgrade := websocket.FastHTTPIsWebSocketUpgrade(ctx)
	if c != nil && c.over {
		r.refuse(ctx, c, upgrade)
		return upgrade
	}
	switch {
	case upgrade && (l.Protocol == WebSocket || l.Upgrade):
		if c != nil {
			c.hdr.reset(hdrOff) // before the hijack: then another goroutine reads
		}
		r.upgrade(ctx, c, l)
		return ctx.Hijacked()
	case upgrade:
		ctx.Error("WebSocket upgrades are disabled on this port", fasthttp.StatusBadRequest)
		ctx.SetConnectionClose()
		return false
	case l.Protocol == WebSocket:
		ctx.Response.Header.Set("Upgrade", "websocket")
		ctx.Error("this port speaks WebSocket only", fasthttp.StatusUpgradeRequired)
		return false
	}
	if c != nil {
		c.handling.Store(true)
	}
	r.h.HTTP(l, ctx)
	if c != nil {
		c.handling.Store(false)
	}
	if r.draining.Load() {
		ctx.SetConnectionClose()
	}
	return false
}

// refuse answers a connection accepted beyond MaxConns: HTTP 503, or a
// completed upgrade followed by close 1013 (try again later).
func (r *Reactor) refuse(ctx *fasthttp.RequestCtx, c *Conn, upgrade bool) {
	if c.overIP {
		r.log.Warn().Int("max_conn_per_ip", r.opts.PerIP.Max()).Str("remote", ctx.RemoteAddr().String()).Msg("connection refused: too many connections from this address")
	} else {
		r.log.Warn().Int("max_conn", r.opts.MaxConns).Str("remote", ctx.RemoteAddr().String()).Msg("connection refused: too many connections")
	}
	if !upgrade {
		ctx.Error("Service Unavailable: too many connections", fasthttp.StatusServiceUnavailable)
		ctx.SetConnectionClose()
		return
	}
	if c == nil {
		ctx.Error("Service Unavailable: too many connections", fasthttp.StatusServiceUnavailable)
		ctx.SetConnectionClose()
		return
	}
	c.hdr.reset(hdrOff)
	r.accept(ctx, func(src io.Reader) {
		_ = c.Conn.SetDeadline(time.Time{})
		c.closeDone = make(chan struct{})
		r.mu.Lock()
		c.ws.Store(true)
		r.mu.Unlock()
		c.CloseWith(CloseTryAgainLater, "too many connections")
		r.finish(c, src, r.opts.WriteTimeout)
	})
}

// ErrClosed is returned for operations on a closed reactor.
var ErrClosed = errors.New("reactor: closed")

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
// after their queued output. Wait tells when all connections are gone.
func (r *Reactor) Drain() {
	if !r.draining.CompareAndSwap(false, true) {
		return
	}
	r.StopAccepting()
	r.Each(func(c *Conn) {
		if c.ws.Load() {
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
	for {
		select {
		case <-r.done:
			return
		case now := <-t.C:
			limit := now.Add(-r.opts.HeartbeatIdle).UnixNano()
			var dead []*Conn
			r.Each(func(c *Conn) {
				if c.ws.Load() && c.lastRead.Load() < limit {
					dead = append(dead, c)
				}
			})
			for _, c := range dead {
				if c.CloseWith(CloseNormal, "heartbeat timeout") == ipc.OK {
					r.log.Info().Str("conn", FormatID(c.id)).Dur("idle", r.opts.HeartbeatIdle).Msg("heartbeat timeout")
				}
			}
		}
	}
}

type fasthttpLogger struct{ l zerolog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) { f.l.Debug().Msgf(format, args...) }
