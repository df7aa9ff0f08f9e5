package reactor

import "io"

// endHalfClosed ends a WebSocket whose peer half-closed (its FIN, as
// shutdown(SHUT_WR) or `nc -N` send) without a close frame: the read loop
// met the end of the stream. Such a peer can still read, so nothing it
// sent is lost: what the handler sends for the messages read before the
// FIN, and from its Close, goes out first, then the connection ends with
// our FIN. In PROCESS mode the handler (the master) defers that end to
// the worker as it defers the reply to a peer's close (DeferCloseReply:
// ipc ClosedReply), so the end follows the worker's answers to those
// messages; if they have not come within closeReplyWait, it ends anyway.
//
// No close frame is sent (the peer sent none, and the handler is told
// CloseAbnormal, 1006, which no frame may carry): the close owed is the
// end alone (endOnly: the handler's CloseWith(CloseAbnormal) queues it).
// A close frame of ours already queued (the peer answered it with a FIN
// alone) goes out as queued, and is the end. raw: the socket was read raw, and
// after its end nothing of the peer's can be unread, so the socket closes
// as soon as the output is written (no lingering; see finish).
func (r *Reactor) endHalfClosed(c *Conn, src io.Reader, reason string, raw bool) {
	r.leaveAll(c)
	code := CloseAbnormal
	c.mu.Lock()
	if c.sentCode != 0 {
		code, reason = c.sentCode, "no close reply"
	}
	if !c.closing {
		c.owe, c.oweCode, c.oweReason, c.endOnly = true, CloseAbnormal, "", true
	}
	c.peerDone = raw
	c.mu.Unlock()
	r.closeOwed(c, src, code, reason, CloseAbnormal, "")
}

// ending reports whether the connection's read loop has ended owing its
// close (the reply to the peer's close, or the end after its FIN): that
// close is on its way, after what the handler sends for the messages
// before it, within closeReplyWait. Drain and the heartbeat leave such a
// connection to it rather than cut those answers with a 1001 or a 1000.
func (c *Conn) ending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.owe
}
