package testharness

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestWaitGoneReusedPid: a remembered process still running is not gone;
// a pid held by a process with another start time (the pid reused) or by
// none is.
func TestWaitGoneReusedPid(t *testing.T) {
	self := os.Getpid()
	start := startTime(self)
	if start == 0 {
		t.Fatalf("no start time for this process (pid %d)", self)
	}
	if waitGone(self, start, 100*time.Millisecond) {
		t.Fatal("this process counted as gone")
	}
	if !waitGone(self, start+1, 10*time.Second) {
		t.Fatal("a process with another start time (a reused pid) did not count as gone")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if !waitGone(cmd.Process.Pid, 0, time.Second) {
		t.Fatal("a pid remembered after its process ended did not count as gone")
	}
	if !waitGone(cmd.Process.Pid, start, 10*time.Second) {
		t.Fatal("an ended process did not count as gone")
	}
}
