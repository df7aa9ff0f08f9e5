// Package testharness starts real forkd servers for tests: it builds a
// program, runs `PROGRAM start` in a process group of its own on the
// addresses the test names (port 0: the server picks them and reports
// them), waits until every process is ready, reads `status --json`, runs
// CLI commands against the server's run dir, and at the end stops it,
// kills its process group and checks that every process it ever had (the
// master and every worker pid status showed) is gone.
//
// It is the one harness of the repository's end-to-end tests (cmd/server,
// the root package's API tests, bench); only tests import it.
package testharness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/master"
)

// Build builds the package pkg (a path go build understands) into
// dir/name, with -race when race is set (so the server is checked too),
// and returns the binary's path.
func Build(dir, name, pkg string, race bool) (string, error) {
	bin := filepath.Join(dir, name)
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", append(args, pkg)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("testharness: go build %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}

// Server is one running `BIN start`.
type Server struct {
	T       testing.TB
	Bin     string
	Dir     string // the test's temporary directory for this server
	RunDir  string // --run-dir
	LogPath string // the server's stdout and stderr
	Cmd     *exec.Cmd
	Exited  chan struct{} // closed when the started process has exited
	// Stopped says the test has stopped the server itself (Cleanup then
	// does not ask again; it still checks that every process is gone).
	Stopped bool

	mu   sync.Mutex
	pids map[int]uint64 // master and every worker pid seen, with its start time: all must be gone at the end
}

// New prepares a server of bin for Start, in a temporary directory of t.
func New(t testing.TB, bin string) *Server {
	dir := t.TempDir()
	return &Server{T: t, Bin: bin, Dir: dir, RunDir: filepath.Join(dir, "run"), LogPath: filepath.Join(dir, "server.log"),
		pids: map[int]uint64{}}
}

// Start runs `BIN start ARGS --run-dir RunDir` with env added to the
// environment, in its own process group, and registers the cleanup that
// stops it (see Cleanup). It does not wait: see WaitReady.
func (s *Server) Start(env []string, args ...string) {
	s.T.Helper()
	cmd := exec.Command(s.Bin, append(append([]string{"start"}, args...), "--run-dir", s.RunDir)...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	s.StartCmd(cmd)
}

// StartCmd starts cmd as Start does (its output to LogPath, a process
// group of its own, Cleanup registered), for a test that starts the server
// through something else (systemd-socket-activate, a shell that execs it):
// the process started must become the master (exec keeps its pid).
func (s *Server) StartCmd(cmd *exec.Cmd) {
	t := s.T
	t.Helper()
	logf, err := os.Create(s.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	s.Cmd = cmd
	cmd.Stdout, cmd.Stderr = logf, logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	s.Exited = make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(s.Exited) }()
	s.Remember(cmd.Process.Pid)
	t.Cleanup(s.Cleanup)
}

// WaitReady waits until `status --json` answers with every worker, task
// worker and user process ready, and then until probe (if not nil) accepts
// the server; it fails the test if the server exits first or limit passes.
// It returns the last status.
func (s *Server) WaitReady(limit time.Duration, probe func(st master.Status) error) master.Status {
	s.T.Helper()
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.Exited:
			s.T.Fatalf("server exited before it was ready (last error: %v)\n%s", last, s.Log())
		default:
		}
		st, err := s.StatusErr()
		switch {
		case err != nil:
			last = err
		case !AllReady(st):
			last = fmt.Errorf("not every process is ready")
		case probe != nil:
			if last = probe(st); last == nil {
				return st
			}
		default:
			return st
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.T.Fatalf("server not ready after %s (last error: %v)\n%s", limit, last, s.Log())
	return master.Status{}
}

// Addrs returns the addresses the server's listeners are bound to, by
// listener name, as status reports them (a listener asked for port 0 shows
// the port it got).
func Addrs(st master.Status) map[string]string {
	out := map[string]string{}
	for _, l := range st.Listeners {
		out[l.Name] = l.Addr
	}
	return out
}

// Adopt registers Cleanup for a server the test starts itself in the
// background (`start -d` in RunDir): it has no Cmd; Cleanup stops it
// through the CLI unless Stopped and checks every pid status showed.
func (s *Server) Adopt() { s.T.Cleanup(s.Cleanup) }

// Remember adds pid to the processes that must be gone at the end, with
// its start time: pids are reused (pid_max may be 32768, and a loaded
// machine goes round in minutes), and a later process with the same pid is
// not this one.
func (s *Server) Remember(pid int) {
	s.mu.Lock()
	if _, ok := s.pids[pid]; !ok {
		s.pids[pid] = startTime(pid)
	}
	s.mu.Unlock()
}

// Pids returns every pid seen so far.
func (s *Server) Pids() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(s.pids))
	for p := range s.pids {
		out = append(out, p)
	}
	return out
}

// Cleanup stops the server with `BIN stop` (unless the test did), kills
// its process group, and checks that every process it ever had is gone,
// killing and reporting any that is not. On failure it logs the server's
// output. Start registers it with t.Cleanup.
func (s *Server) Cleanup() {
	t := s.T
	running := s.Cmd != nil
	if running {
		select {
		case <-s.Exited:
			running = false
		default:
		}
	}
	if !s.Stopped {
		// Also when the started process has exited: a `restart -d` may have
		// replaced it with a master of its own session in the same run dir.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, s.Bin, "stop", "--run-dir", s.RunDir).CombinedOutput()
		cancel()
		if err != nil && running && !t.Failed() {
			t.Errorf("server stop: %v\n%s", err, out)
		}
	}
	if s.Cmd != nil {
		select {
		case <-s.Exited:
		case <-time.After(15 * time.Second):
			t.Errorf("server still running 15s after stop")
		}
		syscall.Kill(-s.Cmd.Process.Pid, syscall.SIGKILL)
		<-s.Exited
	}
	s.mu.Lock()
	pids := make(map[int]uint64, len(s.pids))
	for pid, start := range s.pids {
		pids[pid] = start
	}
	s.mu.Unlock()
	for pid, start := range pids {
		if !waitGone(pid, start, 10*time.Second) {
			t.Errorf("process %d outlived the test; killing it", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if t.Failed() {
		t.Logf("server log:\n%s", s.Log())
	}
}

// WaitPidGone waits until pid no longer exists (zombies count as gone).
func WaitPidGone(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || bytes.Contains(b, []byte(") Z ")) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startTime is pid's start time (clock ticks after boot, field 22 of
// /proc/PID/stat), or 0 if there is no such process.
func startTime(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ... : comm may hold spaces and parentheses.
	f := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:])
	if len(f) < 20 {
		return 0
	}
	n, _ := strconv.ParseUint(string(f[19]), 10, 64)
	return n
}

// waitGone is WaitPidGone for the process that had start time start: a
// process now holding pid with another start time (the pid reused) or
// none (start 0: gone when remembered) counts as gone.
func waitGone(pid int, start uint64, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		if start == 0 || startTime(pid) != start {
			return true
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || bytes.Contains(b, []byte(") Z ")) {
			return true
		}
		if time.Now().After(deadline) {
			return startTime(pid) != start
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log returns what the server printed so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

// Run runs a CLI command against this server's run dir and returns its
// combined output.
func (s *Server) Run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.Bin, append(args, "--run-dir", s.RunDir)...).CombinedOutput()
	return string(out), err
}

// StatusErr returns `status --json`, recording every pid in it.
func (s *Server) StatusErr() (master.Status, error) {
	var st master.Status
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.Bin, "status", "--json", "--run-dir", s.RunDir).Output()
	if err != nil {
		return st, fmt.Errorf("testharness: status --json: %w", err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("testharness: status --json: %w: %s", err, out)
	}
	s.Remember(st.MasterPid)
	for _, w := range append(append(st.Workers, st.TaskWorkers...), st.Processes...) {
		if w.Pid > 0 {
			s.Remember(w.Pid)
		}
	}
	return st, nil
}

// Status is StatusErr failing the test on an error.
func (s *Server) Status() master.Status {
	s.T.Helper()
	st, err := s.StatusErr()
	if err != nil {
		s.T.Fatalf("status: %v", err)
	}
	return st
}

// WorkerPids returns the ready workers' pids by id.
func (s *Server) WorkerPids() map[int]int {
	out := map[int]int{}
	for _, w := range s.Status().Workers {
		if w.State == master.StateReady {
			out[w.ID] = w.Pid
		}
	}
	return out
}

// AllReady reports whether every worker, task worker and user process in
// st is ready (and there is at least one worker).
func AllReady(st master.Status) bool {
	for _, w := range append(append(st.Workers, st.TaskWorkers...), st.Processes...) {
		if w.State != master.StateReady {
			return false
		}
	}
	return len(st.Workers) > 0
}

// WaitFor polls cond until it holds, failing the test after limit.
func WaitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
