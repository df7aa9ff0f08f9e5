package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// socketsOf counts the sockets process pid has open.
func socketsOf(t *testing.T, pid int) int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// alive reports whether pid is still a process (not yet reaped counts).
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// TestFleetHoldsConnections: three helper processes (this test binary run
// as the real bench-client) hold 3,000 WebSockets to a server between
// them: each has its share of sockets open, the server has all of them,
// and stop ends every child.
func TestFleetHoldsConnections(t *testing.T) {
	useHelper(t)
	tg := startBaseline(t)
	for round := range 2 { // twice: the second over sockets the first left in TIME_WAIT
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		shares := fleetShares(3000, 1000)
		if len(shares) != 3 {
			t.Fatalf("fleetShares(3000, 1000): got %v", shares)
		}
		fl, err := startFleet(ctx, os.Args[0], tg.wsAddr, "/echo", shares, 16, round == 1, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := fl.dial(); err != nil {
			t.Fatal(err)
		}
		var progress []int64
		h, err := fl.waitHeld(ctx, func(n int64) { progress = append(progress, n) })
		if err != nil {
			t.Fatal(err)
		}
		if h.conns != 3000 || h.errs != 0 || h.first != "" || h.h.count() != 3000 {
			t.Errorf("round %d: held %d, errs %d (%s), %d latencies; want 3000, 0", round, h.conns, h.errs, h.first, h.h.count())
		}
		if len(progress) == 0 || progress[len(progress)-1] != 3000 {
			t.Errorf("round %d: progress %v, want it to end at 3000", round, progress)
		}
		for i, pid := range fl.pids() {
			if n := socketsOf(t, pid); n < shares[i] {
				t.Errorf("round %d: process %d (pid %d) has %d sockets open, its share is %d", round, i, pid, n, shares[i])
			}
		}
		// The server's end: the 3000 connections established to its port
		// (and, in a run of several tests, maybe some another test's
		// in-process server left open on a port it had before).
		if n := establishedTo(t, tg.wsAddr); n < 3000 {
			t.Errorf("round %d: %d connections established to the server, want 3000", round, n)
		}
		pids := fl.pids()
		if err := fl.stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		for _, pid := range pids {
			if alive(pid) {
				t.Errorf("round %d: child %d still there after stop", round, pid)
			}
		}
		cancel()
	}
}

// TestFleetChildFailure: a child that dies is reported by number and pid
// with how it ended, and one whose dials all fail reports how many and
// the first error.
func TestFleetChildFailure(t *testing.T) {
	useHelper(t)
	tg := startBaseline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	fl, err := startFleet(ctx, os.Args[0], tg.wsAddr, "/echo", []int{50, 50}, 8, false, false)
	if err != nil {
		t.Fatal(err)
	}
	victim := fl.pids()[1]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = fl.dial() // the dead child's stdin may refuse
	_, err = fl.waitHeld(ctx, nil)
	var fe *fleetError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "process 2 of 2 (pid "+strconv.Itoa(victim)) ||
		!strings.Contains(err.Error(), "killed") {
		t.Errorf("waitHeld with a killed child: got %v, want it named with its pid and signal", err)
	}
	pids := fl.pids()
	_ = fl.stop()
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("child %d still there after stop", pid)
		}
	}

	// Nothing listens on a port of a closed listener's: every dial fails.
	addr := closedAddr(t)
	fl, err = startFleet(ctx, os.Args[0], addr, "/echo", []int{20, 20}, 4, false, false)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.stop()
	if err := fl.dial(); err != nil {
		t.Fatal(err)
	}
	h, err := fl.waitHeld(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.conns != 0 || h.errs != 40 || !strings.Contains(h.first, "refused") {
		t.Errorf("dials to %s: held %d, errs %d, first %q; want 0, 40, connection refused", addr, h.conns, h.errs, h.first)
	}
}

// TestFleetStopKills: a child that does not exit when its stdin ends (it
// is stopped, SIGSTOP) is killed by its pid, and stop says so.
func TestFleetStopKills(t *testing.T) {
	useHelper(t)
	tg := startBaseline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fl, err := startFleet(ctx, os.Args[0], tg.wsAddr, "/echo", []int{10, 10}, 4, false, false)
	if err != nil {
		t.Fatal(err)
	}
	fl.exitWait = 500 * time.Millisecond
	if err := fl.dial(); err != nil {
		t.Fatal(err)
	}
	if _, err := fl.waitHeld(ctx, nil); err != nil {
		t.Fatal(err)
	}
	pids := fl.pids()
	if err := syscall.Kill(pids[0], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	err = fl.stop()
	if err == nil || !strings.Contains(err.Error(), "process 1 (pid "+strconv.Itoa(pids[0])+") did not exit within 500ms") ||
		!strings.Contains(err.Error(), "killed") {
		t.Errorf("stop with a stopped child: got %v, want it killed and named", err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("child %d still there after stop", pid)
		}
	}
}

// TestFleetShares: the fewest near-equal shares under the limit.
func TestFleetShares(t *testing.T) {
	for _, c := range []struct {
		n, per int
		want   string
	}{{100000, 18976, "[16667 16667 16667 16667 16666 16666]"}, {3000, 1125, "[1000 1000 1000]"}, {10, 100, "[10]"}, {7, 2, "[2 2 2 1]"}} {
		if got := fmtInts(fleetShares(c.n, c.per)); got != c.want {
			t.Errorf("fleetShares(%d, %d) = %s, want %s", c.n, c.per, got, c.want)
		}
	}
}

func fmtInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// closedAddr is a loopback address nothing listens on: connecting to it
// is refused. Its port is held by a socket bound without listening until
// the test ends: a port freed at once (a listener's, closed) could be
// taken by a listener of another test running meanwhile.
func closedAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
}

// establishedTo counts the established TCP connections of this process
// whose local end is addr (127.0.0.1:port; the server's side of them),
// from /proc/net/tcp and this process's socket inodes.
func establishedTo(t *testing.T, addr string) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	mine := map[string]bool{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			if ino, ok := strings.CutPrefix(l, "socket:["); ok {
				mine[strings.TrimSuffix(ino, "]")] = true
			}
		}
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("0100007F:%04X", p)
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == local && f[3] == "01" && mine[f[9]] {
			n++
		}
	}
	return n
}
