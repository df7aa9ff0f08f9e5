package reactor

import (
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// The WebSocket opening handshake (RFC 6455 4.2) is answered here; the
// connection is then hijacked from fasthttp and served by serveWS.

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// checkHandshake validates an upgrade request; a non-zero status is the
// answer to refuse it with.
func checkHandshake(ctx *fasthttp.RequestCtx) (int, string) {
	if !ctx.IsGet() {
		return fasthttp.StatusMethodNotAllowed, "websocket: the upgrade method must be GET"
	}
	if !ctx.Request.Header.IsHTTP11() && string(ctx.Request.Header.Protocol()) == "HTTP/1.0" {
		return fasthttp.StatusBadRequest, "websocket: the upgrade needs HTTP/1.1"
	}
	if raw := ctx.Request.Header.RawHeaders(); fieldTwice(raw, strWSKey) || fieldTwice(raw, strWSVersion) {
		return fasthttp.StatusBadRequest, "websocket: Sec-WebSocket-Key or Sec-WebSocket-Version sent more than once"
	}
	if v := ctx.Request.Header.Peek("Sec-WebSocket-Version"); string(v) != "13" {
		return fasthttp.StatusUpgradeRequired, "websocket: unsupported or missing Sec-WebSocket-Version (13 is supported)"
	}
	if !validKey(ctx.Request.Header.Peek("Sec-WebSocket-Key")) {
		return fasthttp.StatusBadRequest, "websocket: Sec-WebSocket-Key is not the base64 of 16 bytes"
	}
	return 0, ""
}

// validKey: the key must be the base64 encoding of 16 bytes (RFC 6455
// 4.1): 24 characters, the last two "==".
func validKey(k []byte) bool {
	if len(k) != 24 {
		return false
	}
	var out [18]byte
	n, err := base64.StdEncoding.Decode(out[:], k)
	return err == nil && n == 16
}

// appendAcceptKey appends the Sec-WebSocket-Accept value for a valid key
// (see validKey) to dst, allocating nothing.
func appendAcceptKey(dst, key []byte) []byte {
	var in [24 + len(wsGUID)]byte
	n := copy(in[:], key)
	n += copy(in[n:], wsGUID)
	sum := sha1.Sum(in[:n])
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}

// accept answers 101 and hands the hijacked connection to serve once the
// answer is written. It reports false (and has answered with the reason)
// for a request that is not a valid WebSocket handshake.
func (r *Reactor) accept(ctx *fasthttp.RequestCtx, serve func(src io.Reader)) bool {
	if status, msg := checkHandshake(ctx); status != 0 {
		r.log.Warn().Int("status", status).Str("remote", ctx.RemoteAddr().String()).Str("reason", msg).Msg("websocket upgrade failed")
		ctx.Error(msg, status)
		if status == fasthttp.StatusUpgradeRequired {
			ctx.Response.Header.Set("Sec-WebSocket-Version", "13")
		}
		return false
	}
	if !r.checkOrigin(ctx) { // cross-site WebSocket hijacking; logged there
		ctx.Error("Forbidden: websocket: request origin not allowed", fasthttp.StatusForbidden)
		return false
	}
	ctx.SetStatusCode(fasthttp.StatusSwitchingProtocols)
	ctx.Response.Header.Set("Upgrade", "websocket")
	ctx.Response.Header.Set("Connection", "Upgrade")
	var accept [28]byte
	ctx.Response.Header.SetBytesV("Sec-WebSocket-Accept", appendAcceptKey(accept[:0], ctx.Request.Header.Peek("Sec-WebSocket-Key")))
	ctx.Hijack(func(nc net.Conn) { serve(nc) })
	return true
}

func (r *Reactor) upgrade(ctx *fasthttp.RequestCtx, c *Conn, l *Listener) {
	if c == nil {
		ctx.Error("internal error: unknown connection", fasthttp.StatusInternalServerError)
		return
	}
	if r.draining.Load() {
		ctx.Error("Service Unavailable: server is going away", fasthttp.StatusServiceUnavailable)
		ctx.SetConnectionClose()
		return
	}
	// The request is gone once the connection is hijacked: keep copies, in
	// one allocation.
	var ra [64]byte
	remote := appendRemote(ra[:0], ctx.RemoteAddr())
	uri, hdr := ctx.RequestURI(), ctx.Request.Header.RawHeaders()
	b := make([]byte, 0, len(remote)+len(uri)+len(hdr))
	b = append(b, remote...)
	n := len(b)
	b = append(b, uri...)
	c.hs.Remote, c.hs.URI, c.hs.Header = b[:n:n], b[n:len(b):len(b)], append(b[len(b):], hdr...)
	c.hs.Since = c.since.UnixMilli()
	r.accept(ctx, func(src io.Reader) {
		_ = c.Conn.SetDeadline(time.Time{})
		c.closeDone = make(chan struct{})
		fr := newFrameReader(nil, r.opts.MaxPackageSize)
		fr.attach(c, src) // before ws is set: Send reads c.rawc
		// Under the lock that Each holds: the heartbeat, Drain and status
		// look for WebSockets from their own goroutines.
		r.mu.Lock()
		c.ws.Store(true)
		delete(r.swept, c) // see Reactor.swept
		r.mu.Unlock()
		c.lastRead.Store(time.Now().UnixNano())
		// The handler's Open runs here, in fasthttp's hijack goroutine,
		// which ends right after it; the read loop gets a goroutine of its
		// own (fasthttp's holds the request's context, some KiB, until
		// this function returns). The read loop's goroutine then never
		// runs anything deeper than a read and the handler's Message and
		// Close: an idle one keeps the smallest stack (see readWS).
		r.h.Open(c)
		go r.serveWS(c, fr)
	})
}

// appendRemote appends a as its String method writes it, without
// allocating for a TCP address.
func appendRemote(b []byte, a net.Addr) []byte {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return append(b, a.String()...)
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).AppendTo(b)
}

var (
	msgPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
)

// serveWS is the connection's read loop: it runs in a goroutine of its own
// until the connection ends. fr reads the connection (first what fasthttp
// had read past the upgrade request: see wsread.go).
//
// The closing handshake (RFC 6455 5.5.1, 7.1): no frame after a failing
// one, or after the peer's close, is processed. Every message received
// before the peer's close has reached the handler, and the reply to the
// close goes out after what the handler sent (in PROCESS mode, after the
// worker has handled them: see DeferCloseReply). Once our close frame is
// written the write side is shut at once (the peer sees the connection
// end), and what the peer still sends is drained for a bounded time
// before the socket closes, so that nothing is reset.
func (r *Reactor) serveWS(c *Conn, fr *frameReader) {
	defer fr.release()
	code, reason, fail, peer := r.readWS(c, fr)
	if fail == nil && !peer && fr.eof {
		r.endHalfClosed(c, fr.src, reason, fr.raw != nil)
		return
	}
	r.endWS(c, fr.src, code, reason, fail, peer, peer && fail == nil && fr.peerDone())
}

// peerDone reports whether nothing of the peer's can be left unread after
// its close frame: the frame came off a plain TCP socket in a read that
// left room in the buffer (so the socket held nothing more then), and no
// byte follows it in the buffer. A peer that has sent its close sends no
// more data (RFC 6455 1.4, 5.5.1), only its FIN.
func (fr *frameReader) peerDone() bool {
	return fr.raw != nil && fr.br == nil && fr.r == fr.w && fr.emptied
}

// readWS reads until the peer's close, a failure or the connection's end.
// It is where an idle WebSocket's goroutine waits: kept apart from endWS
// (and serveWS small), so that the stack below the wait stays under 1 KiB
// and the garbage collector shrinks an idle goroutine's stack to 2 KiB.
func (r *Reactor) readWS(c *Conn, fr *frameReader) (code int, reason string, fail *wsFail, peer bool) {
	code = CloseAbnormal
	for {
		op, p, err := fr.next()
		if err != nil {
			if f, ok := isFail(err); ok {
				fail = f
			}
			fr.eof = err == io.EOF || err == io.ErrUnexpectedEOF // the peer's FIN (see endHalfClosed)
			return
		}
		c.lastRead.Store(r.clock.Load()) // coarse: the heartbeat allows for a tick
		switch op {
		case opText, opBinary:
			r.m.WSMessagesIn.Add(1)
			r.m.WSBytesIn.Add(uint64(len(p)))
			r.h.Message(c, op, p)
		case opPing:
			c.pong(p)
		case opClose:
			cc, rs, err := parseClose(p)
			if err != nil {
				fail, _ = isFail(err)
				return
			}
			return cc, rs, nil, true
		}
	}
}

// endWS ends a WebSocket whose read loop is over (see serveWS). done: the
// peer has closed cleanly and left nothing unread (see peerDone).
func (r *Reactor) endWS(c *Conn, src io.Reader, code int, reason string, fail *wsFail, peer, done bool) {
	r.leaveAll(c)
	if fail != nil {
		msg := "websocket protocol error"
		switch fail.code {
		case CloseInvalidPayload:
			msg = "websocket: invalid UTF-8 in text message"
		case CloseMessageTooBig:
			msg = "websocket message too big"
		}
		ev := r.log.Warn().Str("conn", FormatID(c.id)).Str("remote", c.RemoteAddr().String()).
			Int("code", fail.code).Str("reason", fail.reason)
		if fail.code == CloseMessageTooBig {
			ev = ev.Int("limit", r.opts.MaxPackageSize)
		}
		ev.Msg(msg)
		code, reason = fail.code, fail.reason
	}
	if fail == nil && !peer {
		// The connection ended without a close from the peer: cut, reset,
		// or no reply to our close within closeWait.
		c.mu.Lock()
		if c.sentCode != 0 {
			code, reason = c.sentCode, "no close reply"
		}
		c.closing = true
		c.mu.Unlock()
		r.h.Close(c, code, reason)
		c.closeNow()
		return
	}
	// We owe a close: the reply to the peer's (echoing its code), or the
	// one failing the connection. It follows what the handler sends for
	// the messages before (the handler may take it over: DeferCloseReply).
	send, sendReason := EchoCode(code), ""
	if fail != nil {
		send, sendReason = fail.code, fail.reason
	}
	c.owed(send, sendReason, done)
	r.closeOwed(c, src, code, reason, send, sendReason)
}

// closeOwed tells the handler the connection closed (code, reason) and
// ends it with the close it is owed (send, sendReason): queued at once
// unless the handler queued it or took it over (DeferCloseReply, then
// waited for up to closeReplyWait), sent anyway if it was not written in
// time, then the connection finishes.
func (r *Reactor) closeOwed(c *Conn, src io.Reader, code int, reason string, send int, sendReason string) {
	r.h.Close(c, code, reason)
	c.mu.Lock()
	now := !c.closing && !c.deferred
	wait := r.opts.WriteTimeout
	if c.deferred {
		wait = closeReplyWait
	}
	c.mu.Unlock()
	if now {
		c.CloseWith(send, sendReason)
	}
	if !c.waitClose(wait) {
		c.CloseWith(send, sendReason) // the handler never sent it
	}
	r.finish(c, src, r.opts.WriteTimeout)
}

// waitClose waits up to d for our close frame to be written, or until the
// reactor is closed (which has closed every connection: nothing more will
// be written).
func (c *Conn) waitClose(d time.Duration) bool {
	select {
	case <-c.closeDone:
		return true
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.closeDone:
		return true
	case <-c.r.done:
		return false
	case <-t.C:
		return false
	}
}

// finish ends a WebSocket whose close is queued: once our close frame is
// out (and the write side shut), what the peer still sends is drained, so
// that closing does not reset the connection, then the socket closes.
//
// After a clean closing handshake that left nothing of the peer's unread
// (see peerDone), there is nothing to drain: the socket closes as soon as
// our close frame is written, and the close sends the FIN right after it
// (closeWritten did not shut the write side first). No read waiting for
// the peer's FIN, no read deadline, no second syscall to shut: in a
// connection storm, a tenth of a connection's CPU.
func (r *Reactor) finish(c *Conn, src io.Reader, d time.Duration) {
	c.waitClose(d + time.Second) // the sweeper cuts a write stuck longer
	c.mu.Lock()
	done := c.peerDone && c.closeOK
	c.mu.Unlock()
	if !done {
		drain(c.Conn, src, lingerTime, int64(r.opts.MaxPackageSize)+lingerBytes)
	}
	c.closeNow()
}
