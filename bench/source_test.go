package bench

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
)

// TestSourceAddr: connections to a loopback target are spread over
// 127.0.0.2.. (sourceSpread addresses, round robin); others get the
// system's choice. A real dial from a spread source reaches the server
// from that address.
func TestSourceAddr(t *testing.T) {
	if a := sourceAddr("127.0.0.1:80"); a != nil && !spreadSources.Load() {
		t.Errorf("spreading off: source %v, want the system's", a)
	}
	spreadSources.Store(true)
	defer spreadSources.Store(false)
	if a := sourceAddr("10.1.2.3:80"); a != nil {
		t.Errorf("non-loopback target: source %v, want the system's", a)
	}
	if a := sourceAddr("localhost:80"); a != nil {
		t.Errorf("unparsed host: source %v, want the system's", a)
	}
	seen := map[string]bool{}
	for range 2 * sourceSpread {
		a := sourceAddr("127.0.0.1:80").(*net.TCPAddr)
		if !a.IP.IsLoopback() || a.IP.Equal(net.IPv4(127, 0, 0, 1)) || a.Port != 0 {
			t.Fatalf("source %v: want a 127/8 address other than the target's, port 0", a)
		}
		seen[a.IP.String()] = true
	}
	if len(seen) != sourceSpread {
		t.Errorf("%d distinct sources over two rounds, want %d", len(seen), sourceSpread)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range 3 {
		c, err := dialTCPFrom(context.Background(), ln.Addr().String(), sourceAddr(ln.Addr().String()))
		if err != nil {
			t.Fatal(err)
		}
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := sc.RemoteAddr().(*net.TCPAddr).IP, c.LocalAddr().(*net.TCPAddr).IP; !got.Equal(want) || got.Equal(net.IPv4(127, 0, 0, 1)) {
			t.Errorf("server saw %v, client bound %v", got, want)
		}
		sc.Close()
		c.Close()
	}
}

// TestRaiseLimit: the soft limit goes to the hard one; above the hard
// one, the hard one is raised when allowed (capped by fs.nr_open), and
// when not the error is one line saying how far it got and what to do.
func TestRaiseLimit(t *testing.T) {
	allow := func(l *syscall.Rlimit) error { return nil }
	deny := func(l *syscall.Rlimit) error {
		if l.Max > 20000 {
			return syscall.EPERM
		}
		return nil
	}
	cases := []struct {
		cur, max, want, nrOpen uint64
		set                    func(*syscall.Rlimit) error
		got                    uint64
		err                    string
	}{
		{1024, 20000, 0, 1 << 20, allow, 20000, ""},
		{1024, 20000, 10000, 1 << 20, deny, 20000, ""},
		{1024, 20000, 101024, 1 << 20, allow, 101024, ""},
		{1024, 20000, 101024, 1 << 20, deny, 20000, "could be raised to 20000 open files, 101024 are needed"},
		{1024, 20000, 2 << 20, 1 << 20, allow, 1 << 20, "are needed: raise fs.nr_open"},
	}
	for i, c := range cases {
		lim := syscall.Rlimit{Cur: c.cur, Max: c.max}
		got, err := raiseLimit(&lim, c.want, c.nrOpen, c.set)
		if got != c.got {
			t.Errorf("case %d: soft limit %d, want %d", i, got, c.got)
		}
		switch {
		case c.err == "" && err != nil:
			t.Errorf("case %d: %v", i, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || strings.Contains(err.Error(), "\n")):
			t.Errorf("case %d: error %v, want one line with %q", i, err, c.err)
		}
	}
	if !isAddrNotAvail(&net.OpError{Op: "dial", Err: syscall.EADDRNOTAVAIL}) || isAddrNotAvail(errors.New("x")) {
		t.Error("isAddrNotAvail")
	}
}
