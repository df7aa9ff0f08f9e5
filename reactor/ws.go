package reactor

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

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
	// The request is gone once the connection is hijacked: keep copies.
	c.hs.Remote = []byte(ctx.RemoteAddr().String())
	c.hs.URI = append([]byte(nil), ctx.RequestURI()...)
	c.hs.Header = append([]byte(nil), ctx.Request.Header.RawHeaders()...)
	c.hs.Since = c.since.UnixMilli()
	err := r.upgrader.Upgrade(ctx, func(ws *websocket.Conn) {
		_ = c.Conn.SetDeadline(time.Time{})
		// Under the lock that Each holds: the heartbeat, Drain and status
		// read c.ws from their own goroutines.
		r.mu.Lock()
		c.ws = ws
		r.mu.Unlock()
		r.serveWS(c)
	})
	if err != nil {
		r.log.Warn().Err(err).Str("remote", ctx.RemoteAddr().String()).Msg("websocket upgrade failed")
	}
}

var msgPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// serveWS is the connection's read loop: it runs in the hijacking goroutine
// until the connection ends.
func (r *Reactor) serveWS(c *Conn) {
	ws := c.ws
	ws.SetReadLimit(int64(r.opts.MaxPackageSize))
	c.lastRead.Store(time.Now().UnixNano())
	ws.SetPingHandler(func(data string) error {
		c.lastRead.Store(time.Now().UnixNano())
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(r.opts.WriteTimeout))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	r.h.Open(c)
	code, reason := websocket.CloseAbnormalClosure, ""
	for {
		op, rd, err := ws.NextReader()
		if err != nil {
			code, reason = r.readError(c, err)
			break
		}
		bp := msgPool.Get().(*[]byte)
		buf, err := readAll(rd, (*bp)[:0])
		if err != nil {
			*bp = buf[:0]
			msgPool.Put(bp)
			code, reason = r.readError(c, err)
			break
		}
		c.lastRead.Store(time.Now().UnixNano())
		r.m.WSMessagesIn.Add(1)
		r.m.WSBytesIn.Add(uint64(len(buf)))
		if op == websocket.TextMessage && !utf8.Valid(buf) {
			*bp = buf[:0]
			msgPool.Put(bp)
			r.log.Warn().Str("conn", FormatID(c.id)).Str("remote", c.RemoteAddr().String()).Msg("websocket: invalid UTF-8 in text message")
			c.CloseWith(websocket.CloseInvalidFramePayloadData, "invalid UTF-8")
			code, reason = websocket.CloseInvalidFramePayloadData, "invalid UTF-8"
			r.drainReads(ws)
			break
		}
		r.h.Message(c, op, buf)
		if cap(buf) <= 64<<10 {
			*bp = buf[:0]
			msgPool.Put(bp)
		}
	}
	r.leaveAll(c)
	if code == websocket.CloseProtocolError || code == websocket.CloseMessageTooBig {
		// Our close frame is out, but the peer may still be sending (the
		// rest of a too-big message): closing with unread input would reset
		// the connection and could destroy the close frame before the peer
		// reads it. Read and discard for a moment first (a lingering close).
		r.linger(c)
	}
	r.h.Close(c, code, reason)
	// Let queued output (a close frame, say) go out before the socket shuts.
	c.mu.Lock()
	busy := c.writing && !c.closing
	c.closing = true
	c.mu.Unlock()
	if !busy {
		c.Close()
	} else {
		time.AfterFunc(time.Second, func() { c.Close() })
	}
}

// readError turns a read error into the close code the connection ended
// with, logging the peer's protocol violations once.
func (r *Reactor) readError(c *Conn, err error) (int, string) {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		// The peer's close frame (or 1006 for a connection cut mid-frame).
		return ce.Code, ce.Text
	case errors.Is(err, websocket.ErrReadLimit):
		r.log.Warn().Str("conn", FormatID(c.id)).Str("remote", c.RemoteAddr().String()).
			Int("code", websocket.CloseMessageTooBig).Int("limit", r.opts.MaxPackageSize).Msg("websocket message too big")
		return websocket.CloseMessageTooBig, "message too big"
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.As(err, &ne):
		return websocket.CloseAbnormalClosure, ""
	}
	// What is left are fasthttp/websocket's own protocol errors (unmasked
	// client frame, unknown opcode, fragmented or oversized control frame,
	// reserved bits, a bad close frame): it has already answered them with
	// close 1002. They carry no type to match, so they are told apart from
	// I/O errors by elimination, not by their text.
	r.log.Warn().Str("conn", FormatID(c.id)).Str("remote", c.RemoteAddr().String()).
		Int("code", websocket.CloseProtocolError).Err(err).Msg("websocket protocol error")
	return websocket.CloseProtocolError, "protocol error"
}

// linger reads and discards what the peer still sends, for at most a
// second or until it closes, so that closing does not reset the connection.
func (r *Reactor) linger(c *Conn) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.Conn, int64(r.opts.MaxPackageSize)+1<<20))
}

// drainReads reads until the peer answers our close or goes away.
func (r *Reactor) drainReads(ws *websocket.Conn) {
	_ = ws.UnderlyingConn().SetReadDeadline(time.Now().Add(time.Second))
	for {
		if _, _, err := ws.NextReader(); err != nil {
			return
		}
	}
}

func readAll(rd io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				return b, nil
			}
			return b, err
		}
	}
}
