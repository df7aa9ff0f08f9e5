package main

import (
	"strings"
	"testing"
	"time"
)

// TestClusterUsers: a user with a connection on each of two nodes (PROCESS
// and BASE) is reached on both by one /push?uid= on either node, counted
// online on both, and a connection's session is written and read from the
// node that does not hold it (the holder keeps it).
func TestClusterUsers(t *testing.T) {
	ns := natsServer(t, 0, 0)
	nurl := natsURL(ns)
	n1 := startServer(t, "process", 2, "--cluster", nurl, "--node", "u1")
	n2 := startServer(t, "base", 2, "--cluster", nurl, "--node", "u2")
	waitNodes(t, n1, 15*time.Second, "u1", "u2")
	waitNodes(t, n2, 15*time.Second, "u1", "u2")
	a1 := joinChat(t, n1, n1.wsAddr, "lobby", "a1&uid=alice")
	a2 := joinChat(t, n2, n2.wsAddr, "lobby", "a2&uid=alice")
	for _, s := range []*server{n1, n2} {
		waitFor(t, 10*time.Second, "alice online with 2 connections as seen from "+s.mode, func() bool {
			resp, body := getFresh(t, s, "/online?uid=alice")
			return resp.StatusCode == 200 && strings.Contains(body, `"conns":2`)
		})
	}
	for i, s := range []*server{n1, n2} {
		text := "to-alice-from-" + s.mode
		resp, body := s.post("/push?uid=alice", text)
		if resp.StatusCode != 200 || strings.TrimSpace(body) != "2" {
			t.Fatalf("POST /push?uid=alice on node %d: got %d %q, want 200 \"2\"", i+1, resp.StatusCode, body)
		}
		for _, m := range []*busMember{a1, a2} {
			m.waitUntil(t, 10*time.Second, m.name+" gets "+text, seenText(text))
		}
	}
	// The session of a2 (held by node u2) written and read through u1.
	resp, body := n1.post("/session?conn="+a2.id, `{"tier":"gold"}`)
	if resp.StatusCode != 200 || !strings.Contains(body, `"tier":"gold"`) {
		t.Fatalf("POST /session of another node's connection: got %d %q", resp.StatusCode, body)
	}
	for _, s := range []*server{n1, n2} {
		resp, body := getFresh(t, s, "/session?conn="+a2.id)
		if resp.StatusCode != 200 || !strings.Contains(body, `"tier":"gold"`) {
			t.Fatalf("GET /session on %s: got %d %q, want the gold tier", s.mode, resp.StatusCode, body)
		}
	}
	// Closing alice's connection on u2 leaves one, counted from u1.
	a2.c.Close()
	waitFor(t, 10*time.Second, "alice online with 1 connection as seen from u1", func() bool {
		resp, body := getFresh(t, n1, "/online?uid=alice")
		return resp.StatusCode == 200 && strings.Contains(body, `"conns":1`)
	})
}
