package main

import (
	"testing"
	"time"
)

// TestHeartbeatIdleHTTP: --heartbeat-idle closes every connection silent
// that long (SPEC; Swoole's heartbeat_idle_time), a keep-alive HTTP
// connection between requests too, not only WebSockets: with the default
// --idle-timeout (1m), an idle keep-alive connection ends after the
// heartbeat. Both modes, a few rounds (a timing bound).
func TestHeartbeatIdleHTTP(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1, "--heartbeat-idle", "1s")
		for round := 0; round < 3; round++ {
			resp, body, c := rawHTTP(t, s.httpAddr, []byte("GET /hello HTTP/1.1\r\nHost: forkd\r\n\r\n"))
			if resp.StatusCode != 200 || body != "hello" || resp.Close {
				t.Fatalf("got %d %q close=%v, want a kept-alive 200 hello", resp.StatusCode, body, resp.Close)
			}
			start := time.Now()
			expectEOF(t, c, 6*time.Second)
			if took := time.Since(start); took < 700*time.Millisecond {
				t.Fatalf("round %d: idle connection closed after %s, want about 1s", round, took)
			}
		}
	})
}
