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
