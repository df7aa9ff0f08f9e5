package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testharness"
	"github.com/forkd/forkd/master"
)

// The lifecycle tests: `server reload` (and SIGUSR1) under load in both
// modes, `stop -g`, `restart`, `--max-request`, a reload whose replacement
// refuses to start, and daemon mode. The load is strict: every request is
// written on a raw keep-alive connection with no retry, so a connection the
// server closes under a request, or resets, is a counted failure. Only a
// response carrying `Connection: close` followed by a fresh connection is
// allowed.

// TestReload is the rolling reload under load: 16 keep-alive HTTP clients,
// slow requests in flight in task workers, and WebSockets (PROCESS: 50 held
// open through the reload; BASE: close 1001, then reconnect at once).
func TestReload(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--task-workers", "1")
			before := s.status()

			// An idle keep-alive connection: PROCESS keeps it (the master holds
			// it); BASE closes it cleanly (FIN, never a reset).
			idle, err := net.Dial("tcp", s.httpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer idle.Close()
			idleBR := bufio.NewReader(idle)
			idleGet := func() error {
				idle.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(idle, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					return err
				}
				resp, err := http.ReadResponse(idleBR, nil)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			}
			if err := idleGet(); err != nil {
				t.Fatalf("idle connection, first request: %v", err)
			}

			nws := 50
			if mode == "base" {
				nws = 8
			}
			ws := startEchoClients(t, s, nws, mode == "base")
			load := startKeepAliveLoad(t, s.httpAddr, "/hello", 16)
			slow := startSlowLoad(t, s.httpAddr, 2, 400)
			waitFor(t, 10*time.Second, "load to run", func() bool { return load.ok.Load() > 100 && ws.echoed.Load() > int64(nws) })

			watch := watchStatus(s)
			begin := time.Now()
			out, err := s.run("reload")
			took := time.Since(begin)
			watch.check(t)
			if err != nil {
				t.Fatalf("server reload: %v\n%s", err, out)
			}
			t.Logf("reload took %s:\n%s", took.Round(time.Millisecond), out)
			// Keep the load on the new workers for a moment.
			n := load.ok.Load()
			waitFor(t, 10*time.Second, "requests after the reload", func() bool { return load.ok.Load() > n+100 })

			load.check(t)
			slow.check(t)
			ws.check(t)
			after := s.status()
			checkAllReplaced(t, before, after)
			checkReloadOutput(t, out, before, after)
			checkNoRace(t, s)

			if mode == "process" {
				if err := idleGet(); err != nil {
					t.Errorf("idle keep-alive connection after the reload: %v, want it served (PROCESS mode drops no connection)", err)
				}
			} else {
				for i := range ws.perConnAway {
					if ws.perConnAway[i].Load() == 0 {
						t.Errorf("websocket %d: no close 1001 while every worker was replaced", i)
					}
				}
				idle.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err := idleBR.ReadByte()
				if !errors.Is(err, io.EOF) {
					t.Errorf("idle keep-alive connection of a drained worker: got %v, want a clean close (EOF)", err)
				}
			}
		})
	}
}

// TestReloadSignal: kill -USR1 <master pid> reloads like `server reload`.
func TestReloadSignal(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2)
			before := s.status()
			load := startKeepAliveLoad(t, s.httpAddr, "/hello", 16)
			waitFor(t, 10*time.Second, "load to run", func() bool { return load.ok.Load() > 100 })
			pid, err := master.ReadPid(s.RunDir)
			if err != nil {
				t.Fatal(err)
			}
			if pid != before.MasterPid {
				t.Fatalf("run/server.pid says %d, status says master pid %d", pid, before.MasterPid)
			}
			if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			var after master.Status
			waitFor(t, 40*time.Second, "every worker replaced after SIGUSR1", func() bool {
				after = s.status()
				if len(after.Workers) != len(before.Workers) {
					return false
				}
				for i, w := range after.Workers {
					if w.State != master.StateReady || w.Pid == before.Workers[i].Pid {
						return false
					}
				}
				return true
			})
			load.check(t)
			checkAllReplaced(t, before, after)
			// The last replacement is ready (what status shows) before the
			// old worker it replaces has drained and gone: "reload done"
			// comes after that (seconds, for a race-built worker under load).
			waitFor(t, 30*time.Second, `"reload done" in the log after SIGUSR1`, func() bool {
				return strings.Contains(s.log(), "reload done")
			})
			checkNoRace(t, s)
		})
	}
}

// TestStopGraceful: `stop -g` lets an in-flight request finish.
func TestStopGraceful(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--task-workers", "1")
			type result struct {
				status int
				body   string
				err    error
			}
			res := make(chan result, 1)
			begin := time.Now()
			go func() {
				resp, err := (&http.Client{Timeout: 20 * time.Second}).Get("http://" + s.httpAddr + "/slow?ms=1500")
				if err != nil {
					res <- result{err: err}
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				res <- result{status: resp.StatusCode, body: string(b), err: err}
			}()
			waitFor(t, 10*time.Second, "the slow request to reach the task worker", func() bool {
				st := s.status()
				return len(st.TaskWorkers) == 1 && st.TaskWorkers[0].Requests > 0
			})
			out, err := s.run("stop", "-g")
			if err != nil {
				t.Fatalf("server stop -g: %v\n%s", err, out)
			}
			r := <-res
			if r.err != nil || r.status != 200 || r.body != "slept 1500 ms\n" {
				t.Fatalf("in-flight request across stop -g: got %d %q (err %v), want 200 \"slept 1500 ms\\n\"", r.status, r.body, r.err)
			}
			if d := time.Since(begin); d < 1500*time.Millisecond {
				t.Errorf("request answered after %s, before its 1.5s of work", d)
			}
			select {
			case <-s.Exited:
			case <-time.After(10 * time.Second):
				t.Fatalf("master still running after stop -g returned")
			}
			if _, err := master.ReadPid(s.RunDir); !errors.Is(err, master.ErrNotRunning) {
				t.Errorf("pid file after stop -g: got %v, want ErrNotRunning", err)
			}
			checkNoRace(t, s)
		})
	}
}

// TestMaxRequest: --max-request 100 replaces workers under load, with no
// failed request.
func TestMaxRequest(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--max-request", "100")
			load := startKeepAliveLoad(t, s.httpAddr, "/hello", 16)
			waitFor(t, 45*time.Second, "each worker id served by 3 processes", func() bool {
				seen := load.pidsSeen()
				return len(seen) == 2 && seen["0"] >= 3 && seen["1"] >= 3
			})
			load.check(t)
			t.Logf("distinct pids per worker id: %v", load.pidsSeen())
			// Without load no worker reaches its limit: the server settles
			// on one ready process per worker id.
			waitFor(t, 20*time.Second, "two ready workers", func() bool {
				st := s.status()
				return len(st.Workers) == 2 && st.Workers[0].State == master.StateReady && st.Workers[1].State == master.StateReady
			})
			if !strings.Contains(s.log(), "max-request reached") {
				t.Errorf("log has no \"max-request reached\"")
			}
			checkNoRace(t, s)
		})
	}
}

// TestReloadFailedStart: a replacement whose OnWorkerStart fails stops the
// reload; the old workers keep serving; the command says which and why.
// The test binary, run as the built-in app (startHooked), refuses to
// start a worker while FORKD_FAIL_START_FILE exists.
func TestReloadFailedStart(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			flag := filepath.Join(t.TempDir(), "fail-start")
			t.Setenv(envFailStartFile, flag)
			s := startHooked(t, mode, 2)
			before := s.status()
			if err := os.WriteFile(flag, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			load := startKeepAliveLoad(t, s.httpAddr, "/hello", 4)
			// Load under way before the reload (load.check fails a load
			// that served nothing, and the failing start can be quick).
			waitFor(t, 10*time.Second, "load to run", func() bool { return load.ok.Load() > 20 })
			out, err := s.run("reload")
			if err == nil {
				t.Fatalf("reload with a failing replacement succeeded:\n%s", out)
			}
			if !strings.Contains(out, "worker 0") || !strings.Contains(out, "refusing to start") || !strings.Contains(out, flag) {
				t.Errorf("reload output %q: want it to name worker 0 and the reason (refusing to start: %s exists)", out, flag)
			}
			load.check(t)
			after := s.status()
			if len(after.Workers) != 2 {
				t.Fatalf("after the failed reload: %d workers, want 2: %+v", len(after.Workers), after.Workers)
			}
			for i, w := range after.Workers {
				if w.Pid != before.Workers[i].Pid || w.State != master.StateReady {
					t.Errorf("worker %d after the failed reload: pid %d state %s, want the old pid %d, ready", w.ID, w.Pid, w.State, before.Workers[i].Pid)
				}
			}
			old := map[string]bool{}
			for _, w := range before.Workers {
				old[strconv.Itoa(w.Pid)] = true
			}
			for i := 0; i < 8; i++ {
				resp, body := s.get("/hello")
				if resp.StatusCode != 200 || body != "hello" || !old[resp.Header.Get("X-Worker-Pid")] {
					t.Fatalf("GET /hello after the failed reload: %d %q from pid %s, want 200 from an old worker", resp.StatusCode, body, resp.Header.Get("X-Worker-Pid"))
				}
			}
			// Once the cause is gone, the reload goes through.
			os.Remove(flag)
			if out, err := s.run("reload"); err != nil {
				t.Fatalf("reload after removing %s: %v\n%s", flag, err, out)
			}
			checkAllReplaced(t, before, s.status())
			checkNoRace(t, s)
		})
	}
}

// TestRestart: `restart` stops the master and starts a new one.
func TestRestart(t *testing.T) {
	s := startServer(t, "process", 2)
	before := s.status()
	var newPid int
	t.Cleanup(func() { killDaemon(t, s.RunDir, newPid) })
	out, err := s.run("restart", "-d", "--mode", "base", "--workers", "2", "--http", s.httpAddr, "--ws", s.wsAddr)
	if err != nil {
		t.Fatalf("server restart: %v\n%s", err, out)
	}
	newPid, err = master.ReadPid(s.RunDir)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	select { // the old master is gone
	case <-s.Exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("the old master is still running after restart")
	}
	after := s.status()
	if after.MasterPid == before.MasterPid || after.MasterPid != newPid {
		t.Errorf("master pid: %d before, %d after (pid file %d), want a new one", before.MasterPid, after.MasterPid, newPid)
	}
	if after.Mode != "base" || len(after.Workers) != 2 {
		t.Errorf("after restart: mode %s with %d workers, want base with 2", after.Mode, len(after.Workers))
	}
	if resp, body := s.get("/hello"); resp.StatusCode != 200 || body != "hello" {
		t.Errorf("GET /hello after restart: %d %q", resp.StatusCode, body)
	}
	if out, err := s.run("stop"); err != nil {
		t.Errorf("stop after restart: %v\n%s", err, out)
	}
	if !waitPidGone(newPid, 10*time.Second) {
		t.Errorf("restarted master %d still running after stop", newPid)
	}
}

// TestDaemon: `start -d` returns once ready, logs to the run dir's log
// file; `status` and `stop` work on it.
func TestDaemon(t *testing.T) {
	h := testharness.New(t, serverBin)
	dir, runDir := h.Dir, h.RunDir
	h.Adopt() // stops it unless stopped, and checks that every pid status showed is gone
	cli := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, serverBin, append(args, "--run-dir", runDir)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	var pid int
	t.Cleanup(func() { killDaemon(t, runDir, pid) })
	begin := time.Now()
	out, err := cli("start", "-d", "--mode", "process", "--workers", "2", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("start -d: %v\n%s", err, out)
	}
	// The ready line names the address the listener was bound to.
	httpAddr := readyAddr(t, out, "chat page")
	t.Logf("start -d returned after %s: %s", time.Since(begin).Round(time.Millisecond), strings.TrimSpace(out))
	pid, err = master.ReadPid(runDir)
	if err != nil {
		t.Fatalf("after start -d: %v", err)
	}
	if !strings.Contains(out, fmt.Sprintf("master pid %d", pid)) {
		t.Errorf("start -d said %q, want it to name master pid %d", out, pid)
	}
	// Ready means ready: no polling before the first request.
	resp, err := http.Get("http://" + httpAddr + "/hello")
	if err != nil {
		t.Fatalf("GET /hello right after start -d: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /hello right after start -d: status %d", resp.StatusCode)
	}
	out, err = cli("status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{"master pid " + strconv.Itoa(pid), "PID", "STATE", "CONNS", "REQUESTS", "RSS", "RESTARTS", "UPTIME", "ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	out, err = cli("status", "--json")
	if err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	var st master.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	h.Remember(pid)
	for _, w := range st.Workers {
		h.Remember(w.Pid)
	}
	if st.MasterPid != pid || len(st.Workers) != 2 {
		t.Errorf("status --json: master pid %d with %d workers, want %d with 2", st.MasterPid, len(st.Workers), pid)
	}
	logFile := filepath.Join(runDir, "server.log")
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("daemon log: %v", err)
	}
	for _, want := range []string{"server ready", "worker ready"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("daemon log %s lacks %q:\n%s", logFile, want, b)
		}
	}
	// A second start -d in the same run dir says so and fails.
	if out, err := cli("start", "-d", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0"); err == nil || !strings.Contains(out, "already running") {
		t.Errorf("second start -d: got %v %q, want an \"already running\" error", err, out)
	}
	out, err = cli("stop")
	h.Stopped = true
	if err != nil {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	if !waitPidGone(pid, 10*time.Second) {
		t.Errorf("daemon master %d still running after stop", pid)
	}
	if out, err := cli("status"); err == nil || !strings.Contains(out, "not running") {
		t.Errorf("status after stop: got %v %q, want \"not running\"", err, out)
	}
}

// killDaemon kills a detached master (its own session: the harness's
// process group kill does not reach it) and waits for it to go.
func killDaemon(t *testing.T, runDir string, pid int) {
	if p, err := master.ReadPid(runDir); err == nil {
		pid = p
	}
	if pid <= 0 || waitPidGone(pid, 0) {
		return
	}
	t.Errorf("master %d still running at the end of the test; killing it", pid)
	syscall.Kill(pid, syscall.SIGKILL)
	waitPidGone(pid, 5*time.Second)
}

// TestCrashLoopStatus: a worker that keeps failing to start backs off, and
// `status` shows it (state backoff, the delay, the reason); once the cause
// is gone the slot recovers by itself.
func TestCrashLoopStatus(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			flag := filepath.Join(t.TempDir(), "fail-start")
			t.Setenv(envFailStartFile, flag)
			s := startHooked(t, mode, 2)
			before := s.status()
			if err := os.WriteFile(flag, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(before.Workers[1].Pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			var w1 master.WorkerStatus
			waitFor(t, 30*time.Second, "worker 1 to show its crash loop", func() bool {
				for _, w := range s.status().Workers {
					if w.ID == 1 {
						w1 = w
					}
				}
				return w1.State == master.StateBackoff && w1.Backoff != "" && w1.Restarts >= 2 &&
					strings.Contains(w1.LastExit, "refusing to start")
			})
			t.Logf("worker 1 in a crash loop: %+v", w1)
			out, err := s.run("status")
			if err != nil || !strings.Contains(out, "crash loop, next try in") {
				t.Errorf("status: got %v\n%s\nwant a crash-loop note for worker 1", err, out)
			}
			if mode == "process" {
				// The master holds the connections: worker 0 serves them all.
				if resp, body := s.get("/hello"); resp.StatusCode != 200 || body != "hello" {
					t.Errorf("GET /hello with worker 1 down: %d %q", resp.StatusCode, body)
				}
			}
			os.Remove(flag)
			waitFor(t, 30*time.Second, "worker 1 to recover", func() bool {
				for _, w := range s.status().Workers {
					if w.ID == 1 && w.State == master.StateReady && w.Pid != before.Workers[1].Pid {
						w1 = w
						return true
					}
				}
				return false
			})
			if w1.Backoff != "" || w1.LastExit != "" {
				t.Errorf("worker 1 recovered but status still says backoff %q, last exit %q", w1.Backoff, w1.LastExit)
			}
		})
	}
}
