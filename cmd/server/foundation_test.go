package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// TestFoundationBase: in BASE mode every worker answers HTTP and holds its
// own SO_REUSEPORT listening socket for each port, which the master keeps
// open too (so a worker's death never resets queued connections).
func TestFoundationBase(t *testing.T) {
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			s := startServer(t, "base", workers)
			st := s.status()
			if st.Mode != "base" || st.MasterPid != s.Cmd.Process.Pid || len(st.Workers) != workers {
				t.Fatalf("status: got mode %q master %d, %d workers; want base, %d, %d", st.Mode, st.MasterPid, len(st.Workers), s.Cmd.Process.Pid, workers)
			}
			// Every worker answers: new connections are spread by the kernel.
			seen := map[string]bool{}
			waitFor(t, 10*time.Second, "every worker to answer /hello", func() bool {
				resp, body := s.getFresh("/hello")
				if resp.StatusCode != 200 || body != "hello" {
					t.Fatalf("GET /hello: got %d %q, want 200 hello", resp.StatusCode, body)
				}
				seen[resp.Header.Get("X-Worker-Id")+"/"+resp.Header.Get("X-Worker-Pid")] = true
				return len(seen) == workers
			})
			for _, w := range st.Workers {
				if !seen[strconv.Itoa(w.ID)+"/"+strconv.Itoa(w.Pid)] {
					t.Errorf("worker %d (pid %d) never answered; seen %v", w.ID, w.Pid, seen)
				}
			}
			// Sockets: one listening socket per worker and port, distinct
			// across workers, each also held by the master.
			masterSocks := pidSockets(t, st.MasterPid)
			for _, addr := range []string{s.httpAddr, s.wsAddr} {
				listening := tcpListeners(t, addr)
				if len(listening) != workers {
					t.Errorf("port %s: got %d listening sockets, want %d (one per worker slot)", addr, len(listening), workers)
				}
				owner := map[string]int{}
				for _, w := range st.Workers {
					mine := 0
					for ino := range pidSockets(t, w.Pid) {
						if listening[ino] {
							mine++
							if prev, ok := owner[ino]; ok {
								t.Errorf("port %s: socket %s held by workers %d and %d", addr, ino, prev, w.ID)
							}
							owner[ino] = w.ID
							if !masterSocks[ino] {
								t.Errorf("port %s: socket %s of worker %d is not held by the master", addr, ino, w.ID)
							}
						}
					}
					if mine != 1 {
						t.Errorf("port %s: worker %d holds %d listening sockets, want 1", addr, w.ID, mine)
					}
				}
			}
		})
	}
}

// getFresh does a GET on a new connection (so BASE mode's kernel spreads it).
func (s *server) getFresh(path string) (*httpResp, string) {
	s.t.Helper()
	c, err := dialTCP(s.httpAddr)
	if err != nil {
		s.t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
	return readHTTP(s.t, bufio.NewReader(c))
}

// TestEchoExact: WebSocket echo is byte-exact from 0 B to 1 MiB, text and
// binary, on the WebSocket port and by upgrade on the HTTP port.
func TestEchoExact(t *testing.T) {
	for _, mode := range []string{"base", "process"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2)
			for _, addr := range []string{s.wsAddr, s.httpAddr} {
				c := s.dial(addr, "/echo")
				for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 1 << 20} {
					for _, op := range []int{websocket.BinaryMessage, websocket.TextMessage} {
						msg := bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz0123456789"), n/36+1)[:n]
						if op == websocket.BinaryMessage && n > 0 {
							msg[n/2] = 0xff
						}
						if err := c.WriteMessage(op, msg); err != nil {
							t.Fatalf("write %d B: %v", n, err)
						}
						c.SetReadDeadline(time.Now().Add(10 * time.Second))
						gop, got, err := c.ReadMessage()
						if err != nil {
							t.Fatalf("read %d B echo: %v", n, err)
						}
						if gop != op || !bytes.Equal(got, msg) {
							t.Fatalf("echo of %d B (op %d) on %s: got %d B op %d, want exact copy", n, op, addr, len(got), gop)
						}
					}
				}
			}
		})
	}
}

// TestSupervision: a SIGKILLed worker is replaced with the same id; stop
// leaves no process behind; a SIGKILLed master leaves no worker alive.
func TestSupervision(t *testing.T) {
	for _, mode := range []string{"base", "process"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2)
			before := s.workerPids()
			if err := syscall.Kill(before[1], syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			var after map[int]int
			waitFor(t, 15*time.Second, "worker 1 to be replaced", func() bool {
				after = s.workerPids()
				return after[1] != 0 && after[1] != before[1]
			})
			if after[0] != before[0] {
				t.Errorf("worker 0 changed pid %d -> %d; only worker 1 was killed", before[0], after[0])
			}
			st := s.status()
			if st.Workers[1].Restarts != 1 {
				t.Errorf("worker 1 restarts: got %d, want 1", st.Workers[1].Restarts)
			}
			waitFor(t, 10*time.Second, "the replacement to serve", func() bool {
				resp, _ := s.getFresh("/hello")
				return resp.StatusCode == 200 && resp.Header.Get("X-Worker-Pid") == strconv.Itoa(after[1])
			})

			// SIGKILL the master: no worker outlives it.
			if err := syscall.Kill(st.MasterPid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			for id, pid := range after {
				if !waitPidGone(pid, 5*time.Second) {
					t.Errorf("worker %d (pid %d) outlived its SIGKILLed master", id, pid)
				}
			}
			// The stale pid file does not block a new start in the same run dir.
			<-s.Exited
			if _, err := s.run("status"); err == nil {
				t.Errorf("status against a dead master succeeded")
			}
		})
	}
}

// TestStopAndStatus: status --json lists the master and workers; stop ends
// every process; commands against a stopped server say so in one line and
// exit 1; a second start on the same run dir is refused.
func TestStopAndStatus(t *testing.T) {
	s := startServer(t, "base", 2)
	st := s.status()
	if len(st.Workers) != 2 || st.Listeners[0].Addr != s.httpAddr {
		t.Fatalf("status: got %+v", st)
	}
	for i, w := range st.Workers {
		if w.ID != i || w.State != "ready" || w.Pid == 0 || w.RSS == 0 {
			t.Errorf("worker %d: got %+v, want ready with pid and rss", i, w)
		}
	}
	// A second start on the same run dir is refused, naming the pid.
	out, err := exec.Command(serverBin, "start", "--mode", "base", "--workers", "1", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--run-dir", s.RunDir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already running") || !strings.Contains(string(out), strconv.Itoa(st.MasterPid)) {
		t.Errorf("second start: got %v %q, want exit 1 saying already running (pid %d)", err, out, st.MasterPid)
	}
	if out, err := s.run("stop"); err != nil {
		t.Fatalf("stop: %v %s", err, out)
	}
	select {
	case <-s.Exited:
	case <-time.After(10 * time.Second):
		t.Fatal("master still running after stop")
	}
	for _, w := range st.Workers {
		if !waitPidGone(w.Pid, 5*time.Second) {
			t.Errorf("worker %d (pid %d) still running after stop", w.ID, w.Pid)
		}
	}
	for _, cmd := range []string{"status", "stop", "reload", "connections"} {
		out, err := s.run(cmd)
		ee, ok := err.(*exec.ExitError)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if !ok || ee.ExitCode() != 1 || len(lines) != 1 || !strings.Contains(out, "not running") {
			t.Errorf("%s on a stopped server: got %v %q, want exit 1 and one line saying not running", cmd, err, out)
		}
	}
}

// TestConfigFile: --config sets what the flags set, and flags win.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "server.yaml")
	os.WriteFile(cfg, []byte("mode: base\nworkers: 3\ndispatch: round-robin\nmax-package-size: 2MiB\n"), 0o644)
	s := startServer(t, "process", 2, "--config", cfg) // flags: mode process, workers 2
	st := s.status()
	if st.Mode != "process" || len(st.Workers) != 2 || st.Dispatch != "round-robin" {
		t.Errorf("got mode %s, %d workers, dispatch %s; want process (flag), 2 (flag), round-robin (config)", st.Mode, len(st.Workers), st.Dispatch)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("workers: [oops\n"), 0o644)
	out, err := exec.Command(serverBin, "start", "--config", bad, "--run-dir", filepath.Join(dir, "run2")).CombinedOutput()
	if err == nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 || strings.Contains(string(out), "goroutine") {
		t.Errorf("bad config: got %v %q, want exit 1 with one line", err, out)
	}
}

// TestSysmonSetting: the master re-executes itself with the sysmon setting
// (same pid), its workers inherit it, and FORKD_SYSMON=default keeps the
// runtime's default.
func TestSysmonSetting(t *testing.T) {
	godebug := func(pid int) string {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range strings.Split(string(b), "\x00") {
			if v, ok := strings.CutPrefix(e, "GODEBUG="); ok {
				return v
			}
		}
		return ""
	}
	for _, tc := range []struct{ env, want string }{
		{"", "schedtrace=2147483647"},
		{"default", ""},
	} {
		t.Run("FORKD_SYSMON="+tc.env, func(t *testing.T) {
			t.Setenv("FORKD_SYSMON", tc.env)
			t.Setenv("GODEBUG", "")
			s := startServer(t, "process", 1)
			st := s.status()
			if st.MasterPid != s.Cmd.Process.Pid {
				t.Fatalf("master pid %d, started %d: the re-execution must keep the pid", st.MasterPid, s.Cmd.Process.Pid)
			}
			pids := []int{st.MasterPid, st.Workers[0].Pid}
			for _, pid := range pids {
				if got := godebug(pid); got != tc.want {
					t.Errorf("pid %d: GODEBUG=%q, want %q", pid, got, tc.want)
				}
			}
		})
	}
}

// TestStartRefusesBadFlags: a bad start flag is one clear line and exit 1,
// before anything listens.
func TestStartRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "threads"}, "unknown mode"},
		{[]string{"--dispatch", "random"}, "unknown dispatch mode"},
		{[]string{"--workers", "0"}, "--workers must be at least 1"},
		{[]string{"--reactor-num", "-1"}, "--reactor-num must not be negative"},
		{[]string{"--max-package-size", "12 parsecs"}, "--max-package-size"},
		// 0 quietly meant the default: refused, naming the range (the
		// flags whose 0 is documented as off take it).
		{[]string{"--worker-timeout", "0s"}, "--worker-timeout 0s: want 100ms to 1h; it cannot be turned off"},
		{[]string{"--request-timeout", "0s"}, "--request-timeout 0s: want 100ms to 24h"},
		{[]string{"--read-timeout", "0s"}, "--read-timeout 0s: want 100ms to 1h"},
		{[]string{"--idle-timeout", "0s"}, "--idle-timeout 0s: want 100ms to 24h"},
		{[]string{"--reload-wait", "0s"}, "--reload-wait 0s: want 100ms to 1h"},
		{[]string{"--heartbeat-idle", "-1s"}, "--heartbeat-idle -1s: want 0 = off, or 100ms to 24h"},
	} {
		args := append([]string{"start", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--run-dir", t.TempDir()}, tc.args...)
		// Bounded: a flag that is not refused starts a server (killed here).
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, serverBin, args...).CombinedOutput()
		cancel()
		ee, ok := err.(*exec.ExitError)
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if !ok || ee.ExitCode() != 1 || len(lines) != 1 || !strings.Contains(string(out), tc.want) {
			t.Errorf("start %s: got %v %q, want exit 1 and one line saying %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
}
