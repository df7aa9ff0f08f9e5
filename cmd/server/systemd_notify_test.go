package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNotifySocketGoneLoggedOnce: a NOTIFY_SOCKET nobody listens on (a
// variable inherited from a service manager's environment, a manager
// restarted) fails every sd_notify. The server runs on, and says so once,
// not on every watchdog ping: on the old code a warning every half
// WatchdogSec, for as long as it ran (here 4 a second).
func TestNotifySocketGoneLoggedOnce(t *testing.T) {
	s := newTestServer(t, "process")
	gone := filepath.Join(t.TempDir(), "no-manager.sock")
	s.Start([]string{"NOTIFY_SOCKET=" + gone, "WATCHDOG_USEC=500000"},
		"--mode", "process", "--workers", "1", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--log-format", "console")
	s.waitReady(20 * time.Second)
	waitFor(t, 10*time.Second, "the watchdog to be enabled", func() bool { return strings.Contains(s.log(), "systemd watchdog enabled") })
	time.Sleep(2 * time.Second) // 8 pings
	if resp, _ := s.get("/hello"); resp.StatusCode != 200 {
		t.Fatalf("GET /hello: %d", resp.StatusCode)
	}
	if n := strings.Count(s.log(), "sd_notify failed"); n != 1 {
		t.Errorf("\"sd_notify failed\" logged %d times in 2 s of watchdog pings to a socket nobody listens on, want once:\n%s", n, s.log())
	}
}
