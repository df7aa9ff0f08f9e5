package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/master"
)

// TestBoundsWatchdog: a worker SIGSTOPped under load. In PROCESS mode the
// requests it holds are answered 504 after --request-timeout; in both
// modes status shows it unresponsive, it is killed and replaced within
// twice --worker-timeout, every request started after the stop is
// answered within a bound, and SIGCONT of the old process changes nothing.
func TestBoundsWatchdog(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		const timeout = 2 * time.Second
		args := []string{"--worker-timeout", timeout.String(), "--request-timeout", "1s"}
		if mode == "process" {
			args = append(args, "--dispatch", "round-robin")
		}
		s := startHardened(t, mode, 2, args...)
		var before map[int]int
		waitFor(t, 20*time.Second, "both workers ready", func() bool {
			before = s.workerPids()
			return len(before) == 2
		})
		stopped := before[0]
		// PROCESS mode: WebSockets, one per worker (round-robin), each sends
		// a message while the worker is stopped: the one on the hung worker
		// keeps its connection and gets its echo from the replacement.
		var wss []*websocket.Conn
		if mode == "process" {
			for i := 0; i < 2; i++ {
				c := s.dial(s.wsAddr, "/echo")
				echoOK(t, c, "before")
				wss = append(wss, c)
			}
			out, err := s.run("connections", "--json")
			var infos []master.ConnInfo
			if err != nil || json.Unmarshal([]byte(out), &infos) != nil {
				t.Fatalf("connections: %v: %s", err, out)
			}
			slots := map[int]bool{}
			for _, i := range infos {
				if i.Protocol == "websocket" {
					slots[i.Worker] = true
				}
			}
			if !slots[0] || !slots[1] {
				t.Fatalf("got WebSockets on workers %v, want one on each", slots)
			}
		}
		// Load: fresh connections (BASE mode: the kernel hashes some to the
		// stopped worker's socket, where they wait for the replacement).
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		type answer struct {
			code int
			took time.Duration
			err  error
		}
		var mu sync.Mutex
		var answers []answer
		var wg sync.WaitGroup
		if err := syscall.Kill(stopped, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer syscall.Kill(stopped, syscall.SIGCONT)
		for i, c := range wss {
			if err := c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("during %d", i))); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
				for ctx.Err() == nil {
					begin := time.Now()
					resp, err := c.Get("http://" + s.httpAddr + "/hello")
					a := answer{took: time.Since(begin), err: err}
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						a.code = resp.StatusCode
					}
					mu.Lock()
					answers = append(answers, a)
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
		sawUnresponsive := false
		waitFor(t, 4*timeout+20*time.Second, "the stopped worker replaced", func() bool {
			for _, w := range s.status().Workers {
				if w.ID == 0 && w.Pid == stopped && w.State == master.StateUnresponsive {
					sawUnresponsive = true
				}
				if w.ID == 0 && w.Pid != stopped && w.State == master.StateReady {
					return true
				}
			}
			return false
		})
		if !sawUnresponsive {
			t.Errorf("status never showed worker 0 (pid %d) %s", stopped, master.StateUnresponsive)
		}
		if !waitPidGone(stopped, 10*time.Second) {
			t.Fatalf("the hung worker (pid %d) is still there", stopped)
		}
		for i, c := range wss {
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, b, err := c.ReadMessage()
			if err != nil || string(b) != fmt.Sprintf("during %d", i) {
				t.Errorf("WebSocket %d: got %q, %v; want the echo of the message sent while its worker hung", i, b, err)
			}
			echoOK(t, c, "after")
		}
		after := s.workerPids()
		syscall.Kill(stopped, syscall.SIGCONT) // it is dead: nothing happens
		time.Sleep(300 * time.Millisecond)
		if got := s.workerPids(); got[0] != after[0] || got[1] != after[1] || got[1] != before[1] {
			t.Errorf("after SIGCONT: got workers %v, want %v (worker 1 untouched: %d)", got, after, before[1])
		}
		time.Sleep(500 * time.Millisecond) // some load after the replacement
		cancel()
		wg.Wait()
		// Every request was answered, none waited beyond the bounds: 504
		// after --request-timeout (PROCESS), or served by the replacement.
		bound := 2*timeout + 15*time.Second // detection, kill, respawn under -race
		codes := map[int]int{}
		for _, a := range answers {
			if a.err != nil {
				t.Errorf("request failed: %v (after %s)", a.err, a.took)
				continue
			}
			codes[a.code]++
			if a.took > bound {
				t.Errorf("request took %s, want at most %s", a.took, bound)
			}
			switch {
			case a.code == 200:
			case a.code == 504 && mode == "process":
				if a.took > 5*time.Second {
					t.Errorf("504 after %s, want about --request-timeout (1s)", a.took)
				}
			default:
				t.Errorf("got status %d, want 200 (or 504 in PROCESS mode)", a.code)
			}
		}
		t.Logf("%s: answers by status %v", mode, codes)
		if mode == "process" && codes[504] == 0 {
			t.Errorf("no request was answered 504: round-robin should have sent some to the stopped worker")
		}
		if s.countLog("worker hung: killing and replacing it") != 1 {
			t.Errorf("want one 'worker hung' log line")
		}
	})
}

// TestBoundsBaseSecondServer: a second BASE server on the ports of a
// running one fails to start, with the message PROCESS mode gives.
func TestBoundsBaseSecondServer(t *testing.T) {
	s := startHardened(t, "base", 2)
	for _, mode := range hardenModes {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, serverBin, "start", "--mode", mode, "--workers", "1",
			"--http", s.httpAddr, "--ws", s.wsAddr, "--run-dir", filepath.Join(t.TempDir(), "run"))
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil {
			t.Fatalf("second %s server on the same ports started: %s", mode, out)
		}
		if !strings.Contains(string(out), "listener http: listen tcp "+s.httpAddr+": bind: address already in use") {
			t.Errorf("second %s server: got %q, want the address-in-use line", mode, out)
		}
	}
	// The first one still serves alone.
	if resp, _ := s.get("/hello"); resp.StatusCode != 200 {
		t.Errorf("first server: got %d, want 200", resp.StatusCode)
	}
}

// TestBoundsPermissionDenied: as user nobody, stop, status, reload and
// restart against a server started by root say "permission denied" at
// once, in one line, and exit 1, for the control socket's mode (EACCES)
// and for the master's SO_PEERCRED check alike; the server keeps running.
func TestBoundsPermissionDenied(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a command as another user")
	}
	s := startHardened(t, "process", 1)
	// Let nobody reach the binary and the run dir (not write to them).
	for _, d := range []string{filepath.Dir(serverBin), filepath.Dir(s.Dir), s.Dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	asNobody := func(args ...string) (string, time.Duration, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, serverBin, append(args, "--run-dir", s.RunDir)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		begin := time.Now()
		out, _ := cmd.CombinedOutput()
		return string(out), time.Since(begin), cmd.ProcessState.ExitCode()
	}
	check := func(how string) {
		for _, cmd := range []string{"stop", "status", "reload", "restart"} {
			out, took, code := asNobody(cmd)
			if code != 1 || !strings.Contains(out, "permission denied") || strings.Contains(out, "not running") {
				t.Errorf("%s %s as nobody: got exit %d %q, want exit 1 and permission denied", how, cmd, code, out)
			}
			// The refusal used to come after stop's 2-minute wait; 5 s
			// leaves a loaded machine room to start the (race-built)
			// command and still fails that.
			if took > 5*time.Second {
				t.Errorf("%s %s as nobody took %s, want at once (under 5s)", how, cmd, took)
			}
			if strings.Count(strings.TrimSpace(out), "\n") > 0 {
				t.Errorf("%s %s: got %q, want one line", how, cmd, out)
			}
		}
	}
	check("socket mode 0600:")
	// Open the socket's mode: now the master's SO_PEERCRED check refuses.
	if err := os.Chmod(filepath.Join(s.RunDir, master.SocketName), 0o666); err != nil {
		t.Fatal(err)
	}
	check("SO_PEERCRED:")
	if s.countLog("control: peer refused") == 0 {
		t.Errorf("the master did not log the refused peer")
	}
	if resp, _ := s.get("/hello"); resp.StatusCode != 200 {
		t.Errorf("server after refused stops: got %d, want 200", resp.StatusCode)
	}
}

// TestBoundsRunDirFiles: planted symlinks for the pid file and the log are
// refused (their targets untouched); a world-writable run dir is refused
// when running as root; the log is created 0640.
func TestBoundsRunDirFiles(t *testing.T) {
	startErr := func(t *testing.T, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, serverBin, append([]string{"start", "--workers", "1",
			"--http", "127.0.0.1:0", "--ws", "127.0.0.1:0"}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out, err := cmd.CombinedOutput()
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if err == nil {
			t.Fatalf("start %v: exited 0, want a refusal: %s", args, out)
		}
		return string(out)
	}
	plant := func(t *testing.T, link string) string {
		t.Helper()
		target := filepath.Join(t.TempDir(), "precious")
		if err := os.WriteFile(target, []byte("precious\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		return target
	}
	untouched := func(t *testing.T, target string) {
		t.Helper()
		if b, err := os.ReadFile(target); err != nil || string(b) != "precious\n" {
			t.Errorf("symlink target: got %q, %v; want it untouched", b, err)
		}
	}
	newRunDir := func(t *testing.T) string {
		d := filepath.Join(t.TempDir(), "run")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	t.Run("pid", func(t *testing.T) {
		run := newRunDir(t)
		target := plant(t, filepath.Join(run, master.PidName))
		out := startErr(t, "--run-dir", run)
		if !strings.Contains(out, "is a symbolic link: refusing to follow it") {
			t.Errorf("got %q, want the symlink refusal", out)
		}
		untouched(t, target)
	})
	t.Run("log", func(t *testing.T) {
		run := newRunDir(t)
		log := filepath.Join(t.TempDir(), "server.log")
		target := plant(t, log)
		out := startErr(t, "--run-dir", run, "--log-file", log)
		if !strings.Contains(out, "is a symbolic link: refusing to follow it") {
			t.Errorf("got %q, want the symlink refusal", out)
		}
		untouched(t, target)
	})
	t.Run("daemon-log", func(t *testing.T) {
		run := newRunDir(t)
		target := plant(t, filepath.Join(run, "server.log"))
		out := startErr(t, "--run-dir", run, "-d")
		if !strings.Contains(out, "is a symbolic link: refusing to follow it") {
			t.Errorf("got %q, want the symlink refusal", out)
		}
		untouched(t, target)
	})
	t.Run("world-writable", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("the run dir check applies to root")
		}
		run := newRunDir(t)
		if err := os.Chmod(run, 0o777); err != nil {
			t.Fatal(err)
		}
		out := startErr(t, "--run-dir", run)
		if !strings.Contains(out, "is writable by users other than root") {
			t.Errorf("got %q, want the run dir refusal", out)
		}
		if _, err := os.Lstat(filepath.Join(run, master.PidName)); err == nil {
			t.Errorf("a pid file was written in the refused run dir")
		}
	})
	t.Run("log-mode", func(t *testing.T) {
		log := filepath.Join(t.TempDir(), "server.log")
		s := startHardened(t, "base", 1, "--log-file", log)
		st, err := os.Stat(log)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o640 {
			t.Errorf("log mode: got %04o, want 0640", st.Mode().Perm())
		}
		_ = s
	})
}

// TestBoundsWatchdogTask: a SIGSTOPped task worker is shown unresponsive
// and gets no new tasks (callers are told at once), the task it holds
// fails when it is killed, and its replacement serves /slow again.
func TestBoundsWatchdogTask(t *testing.T) {
	const timeout = 2 * time.Second
	s := startHardened(t, "process", 1, "--task-workers", "1", "--worker-timeout", timeout.String())
	if resp, _ := s.get("/slow?ms=1"); resp.StatusCode != 200 {
		t.Fatalf("/slow before: got %d, want 200", resp.StatusCode)
	}
	stopped := s.status().TaskWorkers[0].Pid
	if err := syscall.Kill(stopped, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(stopped, syscall.SIGCONT)
	type answer struct {
		code int
		took time.Duration
	}
	answers := make(chan answer, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 30 * time.Second}
			for ctx.Err() == nil {
				begin := time.Now()
				resp, err := c.Get("http://" + s.httpAddr + "/slow?ms=1")
				if err != nil {
					t.Errorf("/slow: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				answers <- answer{code: resp.StatusCode, took: time.Since(begin)}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	saw := false
	waitFor(t, 4*timeout+20*time.Second, "the task worker replaced", func() bool {
		for _, w := range s.status().TaskWorkers {
			if w.Pid == stopped && w.State == master.StateUnresponsive && !saw {
				saw = true
				// No new task goes to it: a new /slow is answered at once
				// (503 while no task worker is ready), not held.
				begin := time.Now()
				resp, _ := s.get("/slow?ms=1")
				if took := time.Since(begin); took > 1500*time.Millisecond || (resp.StatusCode != 503 && resp.StatusCode != 200) {
					t.Errorf("/slow while the task worker is unresponsive: got %d after %s, want 503 at once", resp.StatusCode, took)
				}
			}
			if w.Pid != stopped && w.State == master.StateReady {
				return true
			}
		}
		return false
	})
	if !saw {
		t.Errorf("status never showed the task worker %s", master.StateUnresponsive)
	}
	waitFor(t, 20*time.Second, "/slow served again", func() bool {
		resp, _ := s.get("/slow?ms=1")
		return resp.StatusCode == 200
	})
	cancel()
	wg.Wait()
	close(answers)
	codes := map[int]int{}
	for a := range answers {
		codes[a.code]++
		if a.took > 2*timeout+15*time.Second {
			t.Errorf("/slow took %s, want it answered within the watchdog's bound", a.took)
		}
		if a.code != 200 && a.code != 502 && a.code != 503 {
			t.Errorf("/slow: got %d, want 200, 502 (task lost with its worker) or 503 (no task worker)", a.code)
		}
	}
	t.Logf("/slow answers by status: %v", codes)
}
