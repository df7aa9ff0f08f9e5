package sysmon

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// EnvSched set to "default" keeps the kernel's normal scheduling policy in
// a PROCESS-mode server's processes (see Batch).
const EnvSched = "FORKD_SCHED"

// Batch puts every thread of this process under SCHED_BATCH, unless
// EnvSched says "default"; the threads it starts later inherit it. A
// PROCESS-mode event worker runs so (the CLI calls it for them alone: not
// for the master, task workers, user processes or BASE mode).
//
// Why: a pipe write wakes its reader with the kernel's "sync" hint (the
// writer is about to sleep), so the worker woken by the master's batch is
// placed on the master's CPU and, having slept, preempts the master at
// once, which is not about to sleep: under a 64-connection echo load the
// master was stopped mid-batch about a thousand times a second, for as
// long as the worker took to answer. A SCHED_BATCH task does not preempt
// the running one when it wakes (the kernel's "batch tasks prefer
// throughput over latency"): it runs when the master sleeps or its slice
// ends, or on the other CPU when that one goes idle, and by then more of
// the next batch has come. Measured (docs/BENCHMARKS.md, "PROCESS mode per
// core", session 4): about a third fewer worker wake-ups per operation and
// less CPU per operation in both scenarios, at the same p99 latency. The
// master keeps the normal policy: run so too, it gained nothing beyond
// the noise and one run's echo p99 tripled. BASE mode's workers serve
// clients directly and gained nothing measurable.
//
// The nice value is kept; a thread under a real-time or idle policy is
// left as it is. Switching from SCHED_OTHER to SCHED_BATCH needs no
// privilege.
func Batch() error {
	if os.Getenv(EnvSched) == "default" {
		return nil
	}
	// A thread started while the list is read may have inherited the old
	// policy: go over the list until a pass changes nothing.
	for pass := 0; pass < 4; pass++ {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("sysmon: list threads: %w", err)
		}
		changed := 0
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			attr, err := unix.SchedGetAttr(tid, 0)
			if errors.Is(err, unix.ESRCH) {
				continue // ended meanwhile
			}
			if err != nil {
				return fmt.Errorf("sysmon: scheduling policy of thread %d: %w", tid, err)
			}
			if attr.Policy != unix.SCHED_NORMAL {
				continue // switched already, or a policy someone chose
			}
			attr.Policy = unix.SCHED_BATCH
			attr.Flags = 0
			if err := unix.SchedSetAttr(tid, attr, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("sysmon: SCHED_BATCH for thread %d: %w", tid, err)
			}
			changed++
		}
		if changed == 0 {
			return nil
		}
	}
	return nil
}
