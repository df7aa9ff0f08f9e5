package main

import (
	"strings"
	"testing"
	"time"
)

// TestWatchdogMasterPaused: a master that does not run for longer than
// twice --worker-timeout (stopped, its container frozen, the machine
// suspended) could not read its workers' answers meanwhile; when it
// resumes it must not take them for hung. Before, it killed every worker
// at once (and in BASE mode every connection with them). The workers and
// a WebSocket opened before the pause are still there after it, nothing
// is logged as hung or unresponsive, and the watchdog still replaces a
// worker that really stops answering.
func TestWatchdogMasterPaused(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		const timeout = time.Second
		s := startHardened(t, mode, 2, "--worker-timeout", timeout.String())
		var before map[int]int
		waitFor(t, 20*time.Second, "both workers ready", func() bool {
			before = s.workerPids()
			return len(before) == 2
		})
		c := s.dial(s.wsAddr, "/echo")
		echoOK(t, c, "before the pause")

		cont := sigstop(t, s.Cmd.Process.Pid)
		time.Sleep(3 * timeout) // more than the 2 x --worker-timeout that kills
		cont()
		time.Sleep(3 * timeout) // the watchdog judges every timeout/5
		echoOK(t, c, "after the pause")
		if after := s.workerPids(); after[0] != before[0] || after[1] != before[1] {
			t.Fatalf("workers after the master's pause: %v, want %v (killed as hung)", after, before)
		}
		for _, l := range strings.Split(s.log(), "\n") {
			if strings.Contains(l, "worker hung") || strings.Contains(l, "worker unresponsive") {
				t.Fatalf("logged after the master's pause: %s", l)
			}
		}

		// The watchdog still works: a worker that stops answering is replaced.
		stopped := before[1]
		sigstop(t, stopped)
		waitFor(t, 20*time.Second, "the stopped worker replaced", func() bool {
			p := s.workerPids()
			return p[1] != 0 && p[1] != stopped
		})
		if !strings.Contains(s.log(), "worker hung") {
			t.Fatal("a stopped worker was replaced without the 'worker hung' line")
		}
	})
}
