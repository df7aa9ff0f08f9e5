package main

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// threadPolicies returns the scheduling policy of each thread of pid.
func threadPolicies(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	var out []int
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		if attr, err := unix.SchedGetAttr(tid, 0); err == nil {
			out = append(out, int(attr.Policy))
		}
	}
	if len(out) == 0 {
		t.Fatalf("no thread of %d read", pid)
	}
	return out
}

// TestSchedPolicy: a PROCESS-mode worker runs every thread under
// SCHED_BATCH (sysmon.Batch); its master, and BASE mode's processes, keep
// the normal policy. The policy is read after load, when the runtime has
// started the threads it needs.
func TestSchedPolicy(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2)
			for i := 0; i < 50; i++ {
				s.get("/hello")
			}
			st := s.status()
			want := unix.SCHED_NORMAL
			if mode == "process" {
				want = unix.SCHED_BATCH
			}
			for id, pid := range s.workerPids() {
				for i, p := range threadPolicies(t, pid) {
					if p != want {
						t.Errorf("worker %d (pid %d) thread %d: policy %d, want %d", id, pid, i, p, want)
					}
				}
			}
			for i, p := range threadPolicies(t, st.MasterPid) {
				if p != unix.SCHED_NORMAL {
					t.Errorf("master thread %d: policy %d, want %d (SCHED_OTHER)", i, p, unix.SCHED_NORMAL)
				}
			}
		})
	}
}
