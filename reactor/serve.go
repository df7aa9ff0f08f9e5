package reactor

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// Accepting and serving: the listener wrapper that assigns connection ids
// and applies the limits, Serve, fasthttp's connection states and errors,
// and the request handler that answers HTTP or upgrades to WebSocket.

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
		r.swept[c] = struct{}{}
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
	delete(r.swept, c)
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
		ExpectHandler:                 r.expect,
		HeaderReceived:                headerReceived, // expect10.go: HTTP/1.0 gets no 100 Continue
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
		// A refused request is logged without the bytes it carried
		// (fasthttp appends its buffer to parse errors otherwise): a
		// client's Authorization or Cookie must never reach the log.
		SecureErrorLogMessage: true,
	}
	r.mu.Lock()
	if r.closed.Load() || r.draining.Load() {
		r.mu.Unlock()
		ln.Close()
		return nil
	}
	r.listeners = append(r.listeners, ln)
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
		c.hdr.idle()
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

// expect answers "Expect: 100-continue": a body its Content-Length already
// puts over --max-package-size gets 413 at once, instead of a 100 Continue
// that invites the client to send what will be refused (RFC 9110 10.1.1).
// fasthttp then closes the connection; it closes lingering, so that a client
// already sending reads the 413 instead of a reset.
func (r *Reactor) expect(ctx *fasthttp.RequestCtx) int {
	if n := ctx.Request.Header.ContentLength(); n > r.opts.MaxPackageSize {
		r.log.Warn().Int("status", fasthttp.StatusRequestEntityTooLarge).Str("remote", ctx.RemoteAddr().String()).
			Int("content_length", n).Int("limit", r.opts.MaxPackageSize).Msg("bad request: body too large (Expect: 100-continue)")
		if c, ok := ctx.Conn().(*Conn); ok {
			c.lingerOnClose.Store(true)
		}
		r.m.HTTPDone(fasthttp.StatusRequestEntityTooLarge, 0)
		return fasthttp.StatusRequestEntityTooLarge
	}
	return fasthttp.StatusContinue
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
			c.idle = nil        // only HTTP waits for a next request
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
