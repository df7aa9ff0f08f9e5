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

// ownPolicy returns the scheduling policy of the calling thread (every
// thread of the test binary has the one it was started with).
func ownPolicy(t *testing.T) int {
	t.Helper()
	attr, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatalf("own scheduling policy: %v", err)
	}
	return int(attr.Policy)
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
			// The master, and BASE mode's workers, keep the policy they
			// inherit: the test's own, SCHED_OTHER unless the CI runner
			// starts its jobs under another (chrt, a systemd unit's
			// CPUSchedulingPolicy=).
			inherited := ownPolicy(t)
			if mode == "process" && inherited == unix.SCHED_BATCH {
				t.Skip("the test itself runs under SCHED_BATCH: a worker that inherits it cannot be told from one that set it")
			}
			want := inherited
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
				if p != inherited {
					t.Errorf("master thread %d: policy %d, want %d (the test's own; SCHED_OTHER is %d)", i, p, inherited, unix.SCHED_NORMAL)
				}
			}
		})
	}
}
