package main

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignalStop: the CLI turns SIGTERM, SIGINT and (in the foreground)
// SIGHUP into an immediate stop and SIGQUIT into a graceful one (the master's context, cancelled with
// its cause): the master logs which, stops its workers, says "server
// stopped" and exits 0 (a signal it did not handle would kill it).
func TestSignalStop(t *testing.T) {
	for _, tc := range []struct {
		sig      syscall.Signal
		graceful string
	}{{syscall.SIGTERM, "graceful=false"}, {syscall.SIGINT, "graceful=false"}, {syscall.SIGQUIT, "graceful=true"},
		// SIGHUP (a closed terminal; nginx's reload, out of habit; systemd's
		// Type=notify-reload without ReloadSignal=) killed the master on the
		// spot: exit 129, no "server stopped", its workers SIGKILLed by the
		// parent-death signal under their connections.
		{syscall.SIGHUP, "graceful=false"}} {
		for _, mode := range []string{"process", "base"} {
			t.Run(mode+"/"+tc.sig.String(), func(t *testing.T) {
				s := startServer(t, mode, 2)
				pids := s.workerPids()
				if err := s.Cmd.Process.Signal(tc.sig); err != nil {
					t.Fatal(err)
				}
				select {
				case <-s.Exited:
				case <-time.After(30 * time.Second):
					t.Fatalf("master still running 30s after %s", tc.sig)
				}
				if code := s.Cmd.ProcessState.ExitCode(); code != 0 {
					t.Errorf("master exit code after %s: %d, want 0", tc.sig, code)
				}
				log := s.log()
				var stopping string
				for _, l := range strings.Split(log, "\n") {
					if strings.Contains(l, "stopping") && strings.Contains(l, "graceful=") {
						stopping = l
					}
				}
				if !strings.Contains(stopping, tc.graceful) || !strings.Contains(log, "server stopped") {
					t.Errorf("after %s: want a stop with %s and \"server stopped\" in the log:\n%s", tc.sig, tc.graceful, log)
				}
				for id, pid := range pids {
					if !waitPidGone(pid, 10*time.Second) {
						t.Errorf("worker %d (pid %d) outlived its master", id, pid)
					}
				}
			})
		}
	}
}
