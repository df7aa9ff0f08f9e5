package main

import (
	"os"
	"os/user"
	"path/filepath"
	"testing"
)

// TestReopenLogsUser: with --user, reopen-logs reaches every worker. The
// master (root) creates the new log file; workers, running as the other
// user, reopen it by path. On the old code the file was root's, 0640, and
// every worker failed with "permission denied": reopen-logs exited 1 (and
// the deploy logrotate file's `|| true` hid it), and the workers went on
// writing into the rotated file until their next reload.
func TestReopenLogsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the master must start as root to drop workers to another user")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip("no user nobody here")
	}
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			os.Chmod(filepath.Dir(dir), 0o755)
			os.Chmod(dir, 0o755)
			logPath := filepath.Join(dir, "app.log")
			s := newTestServer(t, mode)
			os.Chmod(filepath.Dir(s.Dir), 0o755)
			os.Chmod(s.Dir, 0o755)
			s.launch(2, "--task-workers", "1", "--user", "nobody", "--log-file", logPath, "--log-format", "json")
			st := s.status()
			pids := map[int]bool{st.MasterPid: true}
			for _, w := range append(st.Workers, st.TaskWorkers...) {
				pids[w.Pid] = true
			}
			for round := 1; round <= 2; round++ {
				if err := os.Rename(logPath, logPath+".old"); err != nil {
					t.Fatal(err)
				}
				if out, err := s.run("reopen-logs"); err != nil {
					t.Fatalf("reopen-logs, round %d: %v\n%s", round, err, out)
				}
				checkReopened(t, logPath, pids, 0)
				if fi, err := os.Stat(logPath); err != nil || fi.Mode().Perm()&0o007 != 0 {
					t.Fatalf("new log file: %v, mode %v; want no access for others", err, fi.Mode())
				}
			}
		})
	}
}
