package main

import (
	"context"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClusterNATSDownStop: while NATS is down, a cluster node stops as fast
// as a single server does, and a start refused for a port in use prints its
// one line and exits at once. Close used to flush the leaving notice with
// nats.go's default 10 s flush timeout to a NATS that was not there: `stop`
// took 10 s and the refused start 12 s, and the refused start printed the
// "NATS unreachable" warning before its one line.
func TestClusterNATSDownStop(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			ns := natsServer(t, 0, 0)
			n := startServer(t, mode, 1, "--cluster", natsURL(ns), "--node", "down-"+mode)
			waitNodes(t, n, 20*time.Second, "down-"+mode)
			ns.Shutdown()
			ns.WaitForShutdown()
			m := joinChat(t, n, n.wsAddr, "r", "during")
			waitFor(t, 10*time.Second, "status saying NATS is unreachable", func() bool {
				out, err := n.run("status")
				return err == nil && strings.Contains(out, "NATS unreachable")
			})
			// The node is up and serving: status --cluster lists it, and
			// connections --cluster its own connections (they said "0
			// connections on 0 nodes" while NATS was down).
			checkSelfListed(t, n, "down-"+mode, m.id)
			start := time.Now()
			out, err := n.run("stop")
			took := time.Since(start)
			n.Stopped = true
			if err != nil || took > 5*time.Second {
				t.Fatalf("stop with NATS down: %v after %v (want under 5s)\n%s", err, took, out)
			}
		})
	}
	// A NATS address where nothing listens: a port held (bound, not
	// listening) for the rest of the test. The port of a NATS server shut
	// down above is free: a listener of another test (a NATS server of
	// the cluster package's tests, even) could get it meanwhile.
	port, _ := holdPort(t)
	nurl := "nats://127.0.0.1:" + strconv.Itoa(port)
	// A node that never joined lists its own connections too.
	t.Run("never-joined", func(t *testing.T) {
		n := startServer(t, "process", 1, "--cluster", nurl, "--node", "unjoined")
		m := joinChat(t, n, n.wsAddr, "r", "early")
		out, err := n.run("connections", "--cluster")
		if err != nil || !strings.Contains(out, m.id) || !strings.Contains(out, "1 connections on 1 nodes") {
			t.Fatalf("connections --cluster on a node that never joined: %v\n%s", err, out)
		}
	})
	// A start refused for a port in use.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, daemon := range []bool{false, true} {
		args := []string{"start", "--workers", "1", "--http", busy.Addr().String(), "--ws", "127.0.0.1:0",
			"--cluster", nurl, "--node", "refused", "--run-dir", filepath.Join(t.TempDir(), "run")}
		if daemon {
			args = append(args, "-d")
		}
		// The start waits up to 2 s for NATS before serving locally.
		checkRefusedInUse(t, args, 8*time.Second)
	}
}

// checkSelfListed: node s (named name), cut off from NATS, lists itself in
// status --cluster and connection id in connections --cluster (exit 0).
func checkSelfListed(t *testing.T, s *server, name, id string) {
	t.Helper()
	cs, err := s.clusterState()
	if err != nil || cs.Connected || len(cs.Nodes) != 1 || cs.Nodes[0].Name != name {
		t.Errorf("status --cluster --json with NATS down: %v, %+v; want this node listed", err, cs)
	}
	out, err := s.run("connections", "--cluster")
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "1 connections on 1 nodes") {
		t.Errorf("connections --cluster with NATS down: %v\n%s\nwant connection %s listed", err, out, id)
	}
}

// TestClusterBroadcastDeadPeer: a node is SIGKILLed; until presence drops
// it (3.5 s) the others still count it up. A broadcast forwarded to the
// room's owner then waited, on the owner, the whole --cluster-timeout for
// the dead node's member count, so the forwarding node's call timed out:
// the caller got 503 "the room's owner node did not answer" for a
// broadcast the owner had numbered and every member had received (a retry
// would deliver it twice). The owner now counts within half the bound.
func TestClusterBroadcastDeadPeer(t *testing.T) {
	ns := natsServer(t, 0, 0)
	nurl := natsURL(ns)
	names := []string{"dp-a", "dp-b", "dp-c"}
	// A bound of 3 s, not the default 1 s: the owner counts within half of
	// it, and the other half is the caller's room for the hops (a to NATS
	// to b and back, race-built, on a loaded machine: 500 ms was little).
	// The old owner still waited the whole bound, so the call still timed
	// out.
	flags := []string{"--cluster", nurl, "--cluster-timeout", "3s", "--node"}
	a := startServer(t, "process", 1, append(flags, names[0])...)
	b := startServer(t, "base", 1, append(flags, names[1])...)
	c := startServer(t, "process", 1, append(flags, names[2])...)
	for _, s := range []*server{a, b, c} {
		waitNodes(t, s, 20*time.Second, names...)
	}
	a.client = &http.Client{Timeout: 10 * time.Second}
	room := roomOwnedBy(t, "dp", names, 1) // owned by b, with or without c
	ma := joinChat(t, a, a.wsAddr, room, "ma")
	mb := joinChat(t, b, b.wsAddr, room, "mb")
	waitFor(t, 10*time.Second, "both members counted", func() bool {
		_, got := a.post("/broadcast?room="+urlQuery(room), "count")
		return got == "2"
	})
	syscall.Kill(c.Cmd.Process.Pid, syscall.SIGKILL)
	<-c.Exited
	start := time.Now()
	resp, got := a.post("/broadcast?room="+urlQuery(room), "after the kill")
	took := time.Since(start)
	if resp.StatusCode != 200 || got != "2" {
		t.Errorf("broadcast forwarded to a live owner while a dead node is still in presence: %d %q after %v, want 200 and 2 members",
			resp.StatusCode, got, took)
	}
	for _, m := range []*busMember{ma, mb} {
		m.waitUntil(t, 5*time.Second, "the broadcast", seenText("after the kill"))
	}
}

// TestClusterEmbedPortInUse: --cluster-embed (or --cluster-route-addr) on
// a port in use refuses the start at once with the reason, in one line.
// The start used to wait 5 s for the embedded server and then guess ("is
// the port free?").
func TestClusterEmbedPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, flags := range [][]string{
		{"--cluster-embed", busy.Addr().String()},
		{"--cluster-embed", "127.0.0.1:0", "--cluster-route-addr", busy.Addr().String()},
	} {
		args := append([]string{"start", "--workers", "1", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0",
			"--run-dir", filepath.Join(t.TempDir(), "run")}, flags...)
		checkRefusedInUse(t, args, 4*time.Second)
	}
}

// checkRefusedInUse runs the server with args, a start that must be refused
// because an address it names is in use: exit 1 within limit, one line
// saying so.
func checkRefusedInUse(t *testing.T, args []string, limit time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, serverBin, args...).CombinedOutput()
	took := time.Since(start)
	ee, ok := err.(*exec.ExitError)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if !ok || ee.ExitCode() != 1 || len(lines) != 1 || !strings.Contains(string(out), "address already in use") || took > limit {
		t.Errorf("%s: %v after %v, %d lines:\n%s\nwant exit 1 within %v and one line saying the address is in use",
			strings.Join(args, " "), err, took, len(lines), out, limit)
	}
}
