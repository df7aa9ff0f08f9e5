package bench

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
)

// Source addresses. One source address has about 28,000 ephemeral ports
// (net.ipv4.ip_local_port_range) toward one server address: 100,000
// connections to a loopback server need several. Any 127.0.0.0/8 address
// is the loopback interface's, so the load generator spreads the
// connections it opens to a loopback target over the sources 127.0.0.2 to
// 127.0.0.(2+sourceSpread-1), one after the other; a non-loopback target is
// dialed from the address the system picks. Only WebSocket dials spread:
// HTTP senders stay on 127.0.0.1, the address the server's API allows by
// default.

const sourceSpread = 64 // sources: 64 x 28,000 ports, room for 1.8 million

var sourceNext atomic.Uint32

// spreadSources turns the spreading on: only for runs that hold more
// connections than one source address has ports for (spreadAbove), so
// that every other run dials as it always did.
var spreadSources atomic.Bool

const spreadAbove = 16000

// sourceAddr is the local address for the next connection to addr (nil:
// the system's choice, always unless spreadSources is on).
func sourceAddr(addr string) net.Addr {
	ap, err := netip.ParseAddrPort(addr)
	if !spreadSources.Load() || err != nil || !ap.Addr().Is4() || !ap.Addr().IsLoopback() {
		return nil
	}
	return &net.TCPAddr{IP: sourceIP(sourceNext.Add(1) - 1)}
}

// sourceIP is the i-th source address: 127.0.0.2 + i mod sourceSpread.
func sourceIP(i uint32) net.IP {
	return net.IPv4(127, 0, 0, byte(2+i%sourceSpread))
}

// errAddrNotAvail: no local port was free for the source address.
func isAddrNotAvail(err error) bool { return errors.Is(err, syscall.EADDRNOTAVAIL) }

// dialTCPRetry is dialTCP for the scenarios that hold many connections:
// a dial refused for want of a local port (EADDRNOTAVAIL) is retried, from
// the next source address, up to twice; each such retry is counted in
// retried (an error of the scenario's, not hidden).
func dialTCPRetry(ctx context.Context, addr string, retried *atomic.Int64) (net.Conn, error) {
	for try := 0; ; try++ {
		c, err := dialTCPFrom(ctx, addr, sourceAddr(addr))
		if err == nil || !isAddrNotAvail(err) || try == 2 {
			return c, err
		}
		retried.Add(1)
	}
}
