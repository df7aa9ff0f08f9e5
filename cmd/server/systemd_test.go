package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// notifySocket listens where a service manager would (NOTIFY_SOCKET) and
// returns its path and the messages it receives.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// Never full: the server's sd_notify blocks once the datagram queue is
	// (net.unix.max_dgram_qlen, 10 by default) while this reader waits to
	// hand a message on, and WATCHDOG_USEC=300000 pings 6 times a second
	// while the test waits for a reload or a stop that sends its own
	// notification: with 64, a reload taking 11s on a loaded machine hung
	// on its RELOADING=1, waiting for a test that waited for the reload.
	ch := make(chan string, 1<<16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := c.ReadFromUnix(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

// expectNotify waits for a message containing want, and returns it.
func expectNotify(t *testing.T, ch <-chan string, want string) string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("notify socket closed waiting for %q", want)
			}
			if strings.Contains(m, want) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q on the notify socket after 30s", want)
		}
	}
}

// TestSystemdSocketActivate runs the server under systemd-socket-activate,
// which binds the HTTP port, passes it as LISTEN_FDS (named "http"), and
// starts the server on the first connection, with a notify socket of the
// test's own: READY=1 once the listeners serve, RELOADING=1 (with
// MONOTONIC_USEC) then READY=1 around a reload, STOPPING=1 on stop, and
// WATCHDOG=1 pings when WATCHDOG_USEC asks for them. The
// passed socket is used and nothing is bound for it: --http names an
// address the test holds, which a bind would fail on.
func TestSystemdSocketActivate(t *testing.T) {
	if _, err := exec.LookPath("systemd-socket-activate"); err != nil {
		t.Fatalf("systemd-socket-activate is not installed (make deps installs it): %v", err)
	}
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			notifyPath, notes := notifySocket(t)
			held, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			var s *server
			// systemd-socket-activate cannot listen on port 0: a port free a
			// moment ago is taken, and retaken if someone got there first.
			for attempt := 0; ; attempt++ {
				s = startActivated(t, mode, notifyPath, held.Addr().String())
				if s != nil || attempt == 3 {
					break
				}
			}
			if s == nil {
				t.Fatal("systemd-socket-activate could not bind a port in 4 attempts")
			}
			ready := expectNotify(t, notes, "READY=1")
			// Ready means serving: both listeners answer at once.
			if resp, body := s.get("/hello"); resp.StatusCode != 200 || body != "hello" {
				t.Fatalf("GET /hello after READY=1: got %d %q", resp.StatusCode, body)
			}
			s.dial(s.wsAddr, "/echo").Close()
			if !strings.Contains(ready, "STATUS=serving: "+mode+" mode, 2 workers") {
				t.Errorf("READY=1 without the STATUS line: %q", ready)
			}
			// WatchdogSec= (WATCHDOG_USEC): pinged at half the interval.
			expectNotify(t, notes, "WATCHDOG=1")
			st := s.status()
			if got := st.Listeners[0].Addr; got != s.httpAddr {
				t.Errorf("http listener: got %s, want the passed socket %s", got, s.httpAddr)
			}
			if !strings.Contains(s.log(), "listener passed by systemd") {
				t.Errorf("the log does not say the listener was passed")
			}

			if out, err := s.run("reload"); err != nil {
				t.Fatalf("reload: %v\n%s", err, out)
			}
			reloading := expectNotify(t, notes, "RELOADING=1")
			if !regexp.MustCompile(`(?m)^MONOTONIC_USEC=\d+$`).MatchString(reloading) {
				t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", reloading)
			}
			expectNotify(t, notes, "READY=1")
			if resp, _ := s.get("/hello"); resp.StatusCode != 200 {
				t.Fatalf("GET /hello after reload: got %d", resp.StatusCode)
			}

			// Stopped by the test: the cleanup must not stop it again (a
			// master gone a moment before its Wait returned made that second
			// stop's "not running" an error, 1 run in 3 under load).
			s.Stopped = true
			if out, err := s.run("stop"); err != nil {
				t.Fatalf("stop: %v\n%s", err, out)
			}
			expectNotify(t, notes, "STOPPING=1")
		})
	}
}

// startActivated starts the server under systemd-socket-activate on a free
// port and makes the first connection (which starts it). nil: the port was
// taken before systemd-socket-activate bound it.
func startActivated(t *testing.T, mode, notifyPath, heldAddr string) *server {
	t.Helper()
	s := newTestServer(t, mode)
	// systemd-socket-activate binds the HTTP port itself, so it must be
	// named (a port it cannot bind: nil, the caller tries again); heldAddr
	// (a socket the test holds) keeps the server's own --http off it. The
	// WebSocket listener takes port 0.
	s.httpAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	s.StartCmd(exec.Command("systemd-socket-activate", "-l", s.httpAddr, "--fdname=http",
		"-E", "NOTIFY_SOCKET="+notifyPath, "-E", "GORACE="+os.Getenv("GORACE"), "-E", "WATCHDOG_USEC=300000",
		serverBin, "start", "--mode", mode, "--workers", "2", "--http", heldAddr, "--ws", "127.0.0.1:0",
		"--run-dir", s.RunDir, "--log-format", "console")) // exec keeps the pid: it becomes the master
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-s.Exited:
			if strings.Contains(s.log(), "Address already in use") {
				return nil
			}
			t.Fatalf("systemd-socket-activate exited:\n%s", s.log())
		default:
		}
		// The first connection starts the server; it is served once the
		// server runs (the kernel holds it in the passed socket's queue).
		if c, err := net.DialTimeout("tcp", s.httpAddr, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd-socket-activate not listening after 20s:\n%s", s.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.waitReady(30 * time.Second)
	return s
}

// TestSocketActivationBase passes BASE mode its sockets the way systemd
// does (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES; here through a shell that
// execs the server, so the pid is right), on sockets the test opened on
// port 0: one per worker (ReusePort=yes units) is served by every worker;
// a count that cannot be shared out, or a name no listener has, is refused
// with one clear line.
func TestSocketActivationBase(t *testing.T) {
	reuse := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return serr
	}}
	listen := func(addr string) (*os.File, string) {
		ln, err := reuse.Listen(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		a := ln.Addr().String()
		ln.Close() // f keeps the socket
		t.Cleanup(func() { f.Close() })
		return f, a
	}
	run := func(dir string, workers int, names string, files []*os.File, wsAddr string) *exec.Cmd {
		cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, serverBin, "start", "--mode", "base",
			"--workers", strconv.Itoa(workers), "--http", "127.0.0.1:0", "--ws", wsAddr,
			"--run-dir", filepath.Join(dir, "run"), "--log-format", "console")
		cmd.Env = append(os.Environ(), "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+names)
		cmd.ExtraFiles = files
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		return cmd
	}

	t.Run("OnePerWorker", func(t *testing.T) {
		f0, addr := listen("127.0.0.1:0")
		f1, _ := listen(addr)
		s := newTestServer(t, "base")
		s.StartCmd(run(s.Dir, 2, "http:http", []*os.File{f0, f1}, "127.0.0.1:0"))
		s.waitReady(30 * time.Second)
		if got := s.status().Listeners[0].Addr; got != addr {
			t.Errorf("http listener: got %s, want the passed %s", got, addr)
		}
		// Each worker accepts on its own passed socket: fresh connections
		// reach both.
		seen := map[string]bool{}
		waitFor(t, 20*time.Second, "both workers serving the passed sockets", func() bool {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return false
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
			b := make([]byte, 4096)
			n, _ := c.Read(b)
			if m := regexp.MustCompile(`X-Worker-Id: (\d)`).FindSubmatch(b[:n]); m != nil {
				seen[string(m[1])] = true
			}
			return seen["0"] && seen["1"]
		})
	})

	t.Run("Refused", func(t *testing.T) {
		f0, addr := listen("127.0.0.1:0")
		f1, _ := listen(addr)
		for _, tc := range []struct {
			name, names string
			workers     int
			files       []*os.File
			want        string
		}{
			{name: "count", names: "http:http", workers: 3, files: []*os.File{f0, f1}, want: "pass 1 (shared by every worker) or 3"},
			{name: "unknown name", names: "htp", workers: 2, files: []*os.File{f0}, want: `named "htp", which no listener is`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cmd := run(t.TempDir(), tc.workers, tc.names, tc.files, "127.0.0.1:0")
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				done := make(chan struct{})
				var out []byte
				var err error
				go func() { out, err = cmd.CombinedOutput(); close(done) }()
				select {
				case <-done:
				case <-ctx.Done():
					syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					<-done
					t.Fatalf("start did not refuse within 30s:\n%s", out)
				}
				if err == nil || !strings.Contains(string(out), tc.want) {
					t.Errorf("got err %v and %q, want a failure saying %q", err, out, tc.want)
				}
				if strings.Contains(strings.TrimSpace(string(out)), "\n") {
					t.Errorf("got %q, want one line", out)
				}
			})
		}
	})
}

// freePort returns a loopback port that was free a moment ago, for
// systemd-socket-activate's -l, which binds it itself (the one place a
// test names a port: startActivated retries when it was taken meanwhile).
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
