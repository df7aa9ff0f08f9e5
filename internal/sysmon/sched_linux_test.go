package sysmon

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// envSchedChild makes the test binary a child that calls Batch (with
// threads busy starting meanwhile) and prints each thread's policy.
const envSchedChild = "FORKD_TEST_SCHED_CHILD"

func init() {
	if os.Getenv(envSchedChild) == "" {
		return
	}
	// Threads come and go while Batch runs: goroutines locked to threads
	// of their own.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			<-stop
		}()
	}
	err := Batch()
	// A thread started after Batch inherits the policy.
	done := make(chan int)
	go func() {
		runtime.LockOSThread()
		attr, _ := unix.SchedGetAttr(0, 0)
		done <- int(attr.Policy)
		<-stop
	}()
	later := <-done
	ents, _ := os.ReadDir("/proc/self/task")
	var pols []string
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		if attr, gerr := unix.SchedGetAttr(tid, 0); gerr == nil {
			pols = append(pols, strconv.Itoa(int(attr.Policy)))
		}
	}
	if err != nil {
		os.Stdout.WriteString("error " + err.Error() + "\n")
	}
	os.Stdout.WriteString("later " + strconv.Itoa(later) + "\nthreads " + strings.Join(pols, " ") + "\n")
	close(stop)
	os.Exit(0)
}

func runSchedChild(t *testing.T, env ...string) (later string, threads []string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, envSchedChild+"=1")...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		switch f := strings.Fields(l); f[0] {
		case "error":
			t.Fatalf("Batch: %s", l)
		case "later":
			later = f[1]
		case "threads":
			threads = f[1:]
		}
	}
	if len(threads) < 2 {
		t.Fatalf("child listed %d threads: %q", len(threads), out)
	}
	return later, threads
}

// TestBatch: every thread of the process, and one started afterwards, runs
// under SCHED_BATCH; FORKD_SCHED=default leaves them all as they were.
func TestBatch(t *testing.T) {
	batch := strconv.Itoa(unix.SCHED_BATCH)
	// The children inherit this process's policy: SCHED_OTHER on most
	// machines, but a CI runner may start its jobs under another (chrt -b,
	// -i). What "default" leaves is that policy; a thread under one other
	// than SCHED_OTHER or SCHED_BATCH Batch leaves alone (see Batch).
	attr, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatalf("this process's scheduling policy: %v", err)
	}
	if attr.Policy != unix.SCHED_NORMAL && attr.Policy != unix.SCHED_BATCH {
		t.Skipf("the test runs under scheduling policy %d, which Batch leaves as it is", attr.Policy)
	}
	normal := strconv.Itoa(int(attr.Policy)) // inherited: SCHED_OTHER unless the runner chose SCHED_BATCH
	later, threads := runSchedChild(t, EnvSched+"=")
	if later != batch {
		t.Errorf("a thread started after Batch: policy %s, want %s (SCHED_BATCH)", later, batch)
	}
	for i, p := range threads {
		if p != batch {
			t.Errorf("thread %d of %d: policy %s, want %s (SCHED_BATCH)", i, len(threads), p, batch)
		}
	}
	later, threads = runSchedChild(t, EnvSched+"=default")
	for _, p := range append(threads, later) {
		if p != normal {
			t.Errorf("with %s=default: policy %s, want %s (this process's)", EnvSched, p, normal)
		}
	}
}
