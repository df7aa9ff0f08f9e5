package main

import (
	"strings"
	"testing"
)

// TestRestartRefusesBeforeStopping: a restart whose flags start would
// refuse (a bad mode, no workers, an unknown config key) says so in one
// line and leaves the running server as it is. It used to stop the server
// first and then fail to start it: the server was down.
func TestRestartRefusesBeforeStopping(t *testing.T) {
	s := startServer(t, "base", 1)
	pid := s.status().MasterPid
	for _, bad := range [][]string{{"--mode", "bogus"}, {"--workers", "0"}, {"--log-level", "loud"}} {
		out, err := s.run(append([]string{"restart"}, bad...)...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if err == nil || len(lines) != 1 || !strings.Contains(out, "the running server is left as it is") {
			t.Errorf("restart %v: %v, %d lines:\n%s\nwant a one-line refusal", bad, err, len(lines), out)
		}
		if st, err := s.statusErr(); err != nil || st.MasterPid != pid {
			t.Fatalf("after restart %v: the server is gone or replaced: %v, master %d (was %d)", bad, err, st.MasterPid, pid)
		}
	}
}
