package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testharness"
	"github.com/forkd/forkd/master"
)

// TestNotifySocketGoneLoggedOnce: a NOTIFY_SOCKET nobody listens on (a
// variable inherited from a service manager's environment, a manager
// restarted) fails every sd_notify. The server runs on, and says so once,
// not on every watchdog ping: on the old code a warning every half
// WatchdogSec, for as long as it ran (here 4 a second).
func TestNotifySocketGoneLoggedOnce(t *testing.T) {
	s := newTestServer(t, "process")
	gone := filepath.Join(t.TempDir(), "no-manager.sock")
	s.Start([]string{"NOTIFY_SOCKET=" + gone, "WATCHDOG_USEC=500000"},
		"--mode", "process", "--workers", "1", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--log-format", "console")
	s.waitReady(20 * time.Second)
	waitFor(t, 10*time.Second, "the watchdog to be enabled", func() bool { return strings.Contains(s.log(), "systemd watchdog enabled") })
	time.Sleep(2 * time.Second) // 8 pings
	if resp, _ := s.get("/hello"); resp.StatusCode != 200 {
		t.Fatalf("GET /hello: %d", resp.StatusCode)
	}
	if n := strings.Count(s.log(), "sd_notify failed"); n != 1 {
		t.Errorf("\"sd_notify failed\" logged %d times in 2 s of watchdog pings to a socket nobody listens on, want once:\n%s", n, s.log())
	}
}

// TestRestartRefusesSystemdServer: `restart` on a server systemd started
// (NOTIFY_SOCKET or LISTEN_FDS in its environment) refuses in one line and
// leaves it running. On the old code it stopped it (systemd saw its
// service exit 0 and left it down) and started another outside systemd:
// not supervised, without the sockets systemd passed, holding the run dir
// a systemd restart then found taken.
func TestRestartRefusesSystemdServer(t *testing.T) {
	notifyPath, notes := notifySocket(t)
	s := newTestServer(t, "process")
	s.Start([]string{"NOTIFY_SOCKET=" + notifyPath},
		"--mode", "process", "--workers", "1", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--log-format", "console")
	s.waitReady(20 * time.Second)
	expectNotify(t, notes, "READY=1")
	before := s.status()
	var newPid int
	t.Cleanup(func() {
		if newPid != 0 && newPid != before.MasterPid {
			killDaemon(t, s.RunDir, newPid)
		}
	})
	out, err := s.run("restart", "-d")
	if p, perr := master.ReadPid(s.RunDir); perr == nil {
		newPid = p
	}
	if err == nil {
		t.Fatalf("restart of a server systemd started: exit 0, want a refusal:\n%s", out)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.Contains(out, "systemctl") {
		t.Errorf("restart's refusal: want one line naming systemctl, got:\n%s", out)
	}
	if after := s.status(); after.MasterPid != before.MasterPid {
		t.Errorf("master pid %d after the refused restart, want %d still running", after.MasterPid, before.MasterPid)
	}
	if resp, _ := s.get("/hello"); resp.StatusCode != 200 {
		t.Errorf("GET /hello after the refused restart: %d", resp.StatusCode)
	}
}

// TestDaemonUnderNotifyRefused: `start -d` with NOTIFY_SOCKET set (an
// ExecStart= with -d in a Type=notify unit, the Type=forking habit) refuses
// in one line, starting nothing. On the old code the command exited 0
// once its detached master was ready: systemd saw its main process exit
// before READY=1 and failed the unit, killing the detached master with
// it, with nothing saying why.
func TestDaemonUnderNotifyRefused(t *testing.T) {
	notifyPath, _ := notifySocket(t)
	h := testharness.New(t, serverBin)
	h.Adopt()
	var pid int
	t.Cleanup(func() { killDaemon(t, h.RunDir, pid) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, serverBin, "start", "-d", "--workers", "1", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--run-dir", h.RunDir)
	cmd.Dir = h.Dir
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	out, err := cmd.CombinedOutput()
	if p, perr := master.ReadPid(h.RunDir); perr == nil {
		pid = p
	}
	if err == nil {
		t.Fatalf("start -d with NOTIFY_SOCKET set: exit 0, want a refusal:\n%s", out)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(string(out), "-d") {
		t.Errorf("start -d with NOTIFY_SOCKET set: want one line naming -d, got:\n%s", out)
	}
	if pid != 0 {
		t.Errorf("a refused start -d left master %d running", pid)
	}
}
