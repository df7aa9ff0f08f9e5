package main

import (
	"strings"
	"testing"
)

// TestReloadTasksOnlyWithoutTasks: `reload --tasks-only` on a server with
// no task workers refuses in one line. On the old code it printed nothing
// and exited 0 (and counted a successful reload in forkd_reloads_total):
// the operator believed the task code was replaced.
func TestReloadTasksOnlyWithoutTasks(t *testing.T) {
	s := startServer(t, "process", 1)
	before := s.status()
	out, err := s.run("reload", "--tasks-only")
	if err == nil {
		t.Fatalf("reload --tasks-only with no task workers: exit 0, want a refusal; output %q", out)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.Contains(out, "task workers") {
		t.Errorf("reload --tasks-only with no task workers: want one line naming task workers, got %q", out)
	}
	if after := s.status(); after.Workers[0].Pid != before.Workers[0].Pid {
		t.Errorf("worker replaced by a refused reload --tasks-only: pid %d -> %d", before.Workers[0].Pid, after.Workers[0].Pid)
	}
}
