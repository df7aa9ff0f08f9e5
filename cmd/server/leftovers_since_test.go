package main

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestUsersBadSince: a recovering join whose since (or epoch) is not a
// non-negative integer is answered as one that cannot be replayed exactly:
// the connection gets {"type":"gap"} first, then every message still kept,
// then live ones (it is in the room), and the server logs it once. A
// since=0 join, the control, replays the same messages with no gap. Both
// modes, every malformed value once.
func TestUsersBadSince(t *testing.T) {
	const logLine = "since/epoch not a non-negative integer"
	bad := []string{
		"since=abc",
		"since=-1",
		"since=" + url.QueryEscape("+3"),
		"since=1.5",
		"since=18446744073709551616", // over uint64
		"since=18446744073709551615", // SinceInvalid itself
		"since=2&epoch=xyz",
		"since=2&epoch=4294967296", // over uint32
	}
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--room-history", "100", "--room-history-ttl", "1h")
			for _, m := range []string{"k1", "k2", "k3"} {
				if resp, body := s.post("/broadcast?room=bs", m); resp.StatusCode != 200 {
					t.Fatalf("broadcast: %d %q", resp.StatusCode, body)
				}
			}
			ctl := dialMember(t, s, "ctl", "room=bs&name=ctl&since=0")
			ctl.waitUntil(t, 10*time.Second, "k3", func(seen []string) bool { return contains(seen, "k3") })
			if got := strings.Join(ctl.seen[:3], ","); got != "k1,k2,k3" {
				t.Fatalf("since=0: got %q first, want k1,k2,k3 with no gap", ctl.seen)
			}
			ctl.c.Close()
			for i, q := range bad {
				name := "bad" + string(rune('a'+i))
				m := dialMember(t, s, name, "room=bs&name="+name+"&"+q)
				m.waitUntil(t, 10*time.Second, "k3", func(seen []string) bool { return contains(seen, "k3") })
				if m.seen[0] != `{"type":"gap","room":"bs"}` {
					t.Fatalf("%s: first message after the welcome: got %q, want the gap", q, m.seen[0])
				}
				for _, k := range []string{"k1", "k2", "k3"} {
					if count(m.seen, k) != 1 {
						t.Fatalf("%s: after the gap, want every kept message once: %q", q, m.seen)
					}
				}
				live := "live-" + name
				s.post("/broadcast?room=bs", live)
				m.waitUntil(t, 10*time.Second, "a live broadcast", func(seen []string) bool { return contains(seen, live) })
				m.c.Close()
			}
			waitFor(t, 10*time.Second, "one log line per bad since", func() bool {
				return strings.Count(s.log(), logLine) >= len(bad)
			})
			if n := strings.Count(s.log(), logLine); n != len(bad) {
				t.Errorf("logged %d times for %d bad joins, want once each", n, len(bad))
			}
		})
	}
}
