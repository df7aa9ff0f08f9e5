package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/master"
)

// TestStopEndsWhenItsMasterExits: `stop` waits for the master it asked
// (that pid), not for the run dir to be free. Here a new master takes the
// run dir the moment the old one lets go of it, before the old process has
// exited (`stop` in one shell, `start` at once in another): stop must
// still report the old master stopped, promptly and with exit 0. The new
// master is played by the test, doing what a starting master does
// (master.takePidFile: create the pid file, take its lock, write its pid),
// because only that is quick enough to land in the gap every time.
func TestStopEndsWhenItsMasterExits(t *testing.T) {
	s := startServer(t, "base", 1)
	oldPid := s.status().MasterPid
	pidPath := filepath.Join(s.RunDir, master.PidName)

	taken := make(chan *os.File, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		defer close(taken)
		for ctx.Err() == nil {
			if _, err := os.Stat(pidPath); err == nil {
				time.Sleep(200 * time.Microsecond)
				continue
			}
			f, err := os.OpenFile(pidPath, os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				t.Errorf("take the run dir: %v", err)
				return
			}
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
				f.Close()
				continue // the old master still holds it (its file was not removed yet)
			}
			f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
			taken <- f
			return
		}
	}()

	stopCtx, stopCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer stopCancel()
	out, err := exec.CommandContext(stopCtx, serverBin, "stop", "--run-dir", s.RunDir).CombinedOutput()
	s.Stopped = true
	f := <-taken
	if f == nil {
		t.Fatalf("the run dir was never free after stop (stop: %v %q)", err, out)
	}
	defer func() { os.Remove(pidPath); f.Close() }()
	if stopCtx.Err() != nil {
		t.Fatalf("stop still waiting after 20s, though master %d had exited and another took the run dir: %q", oldPid, out)
	}
	if err != nil || !strings.Contains(string(out), "server stopped (master pid "+strconv.Itoa(oldPid)+")") {
		t.Fatalf("stop: got %v %q, want exit 0 and server stopped (master pid %d)", err, out, oldPid)
	}
	// The run dir is now the new master's: status reads its pid.
	if pid, err := master.ReadPid(s.RunDir); err != nil || pid != os.Getpid() {
		t.Errorf("after stop, run dir pid: got %d %v, want the new master's %d", pid, err, os.Getpid())
	}
}
