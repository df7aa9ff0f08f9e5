package reactor

import (
	"net"
	"net/netip"
	"sync"
)

// IPLimiter bounds connections per client address. Acquire counts a new
// connection from ip and reports whether it is within the limit (a refused
// one is not counted); Release uncounts one Acquire admitted.
type IPLimiter interface {
	Acquire(ip netip.Addr) bool
	Release(ip netip.Addr)
	Max() int
}

// IPCounter is an exact IPLimiter for one process (PROCESS mode's
// master, which holds every connection).
type IPCounter struct {
	max int
	mu  sync.Mutex
	n   map[netip.Addr]int
}

// NewIPCounter returns a limiter admitting max connections per address.
func NewIPCounter(max int) *IPCounter {
	return &IPCounter{max: max, n: make(map[netip.Addr]int)}
}

// Acquire implements IPLimiter.
func (l *IPCounter) Acquire(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[ip] >= l.max {
		return false
	}
	l.n[ip]++
	return true
}

// Release implements IPLimiter.
func (l *IPCounter) Release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[ip] <= 1 {
		delete(l.n, ip)
		return
	}
	l.n[ip]--
}

// Max implements IPLimiter.
func (l *IPCounter) Max() int { return l.max }

// remoteIP is the client's address (IPv4-mapped IPv6 as IPv4).
func remoteIP(nc net.Conn) netip.Addr {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
