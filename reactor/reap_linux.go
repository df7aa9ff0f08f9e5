package reactor

import (
	"crypto/tls"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// shutIdle ends an idle HTTP connection of a draining reactor without a
// reset, and reports whether it did. A client may send its next request
// at any moment, and closing a socket with unread input answers with a
// reset, so:
//   - if a request has already arrived, nothing is done: it is served and
//     answered with Connection: close (false);
//   - otherwise our side is shut for writing (the client sees a clean
//     end of stream), and the connection's goroutine gets one more second
//     to read: it closes on the client's FIN, or at that deadline, and a
//     request already on its way is read, not met with a reset.
//
// Over TLS the same holds on the TCP connection underneath; our side ends
// with a close_notify alert, then the TCP half-close.
func (c *Conn) shutIdle() bool {
	tc, ok := c.Conn.(*net.TCPConn)
	tlsConn, isTLS := c.Conn.(*tls.Conn)
	if isTLS {
		tc, ok = tlsConn.NetConn().(*net.TCPConn)
	}
	if !ok {
		c.Close()
		return true
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		c.Close()
		return true
	}
	pending := false
	_ = raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		pending = err == nil && n > 0
	})
	if pending {
		return false
	}
	if isTLS {
		_ = tlsConn.CloseWrite() // close_notify; a connection mid-handshake is not idle
	}
	_ = tc.CloseWrite()
	_ = tc.SetReadDeadline(time.Now().Add(time.Second))
	return true
}

// wakeIfPeerClosed ends the wait of a connection whose client has
// half-closed, and reports whether it did. A keep-alive connection waits
// for its next request, and a WebSocket for its next message, on the
// poller's edge without reading first (idlewait_linux.go, wsread.go). A
// FIN that arrived before the read that took the client's last bytes
// raised its edge before that read (which returns the bytes, not the end),
// and none after: the wait would sleep on it until --idle-timeout, or for
// ever for a WebSocket without --heartbeat-idle. The sweeper looks once
// per such wait (peeked): a peek that finds the end of the stream and
// nothing before it shuts our reading side, which raises a new edge; the
// wait wakes, reads the end, and the connection closes as on any FIN,
// after what it already answered. TLS connections read before they wait
// and are not looked at. One system call per wait that lasts a sweep tick
// (half a second for a WebSocket), none on a busy connection.
func (c *Conn) wakeIfPeerClosed() bool {
	tc, ok := c.Conn.(*net.TCPConn)
	if !ok {
		return false
	}
	raw := c.rawc
	if raw == nil {
		var err error
		if raw, err = tc.SyscallConn(); err != nil {
			return false
		}
	}
	eof := false
	_ = raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		eof = err == nil && n == 0
	})
	if eof {
		_ = tc.CloseRead()
	}
	return eof
}
