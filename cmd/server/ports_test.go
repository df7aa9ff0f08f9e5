package main

import (
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// holdPort binds a loopback TCP port without listening on it, so that no
// other socket of the machine gets it (a connection to it is refused, as
// to a free port), for a test that must name a port before its server
// listens there; release frees it (also at the end of the test).
func holdPort(t testing.TB) (port int, release func()) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { syscall.Close(fd) }) }
	t.Cleanup(release)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port, release
}

// TestHoldPort: a held port refuses connections, is not given to a
// listener asking for any port, and can be listened on once released.
func TestHoldPort(t *testing.T) {
	port, release := holdPort(t)
	addr := &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = syscall.Connect(fd, addr)
	syscall.Close(fd)
	if err != syscall.ECONNREFUSED {
		t.Fatalf("connect to a held port: %v, want connection refused", err)
	}
	if ln, err := listenTCP(port); err == nil {
		ln.Close()
		t.Fatalf("a listener got held port %d", port)
	}
	release()
	ln, err := listenTCP(port)
	if err != nil {
		t.Fatalf("listen on port %d once released: %v", port, err)
	}
	ln.Close()
}

func listenTCP(port int) (net.Listener, error) {
	return net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
}
