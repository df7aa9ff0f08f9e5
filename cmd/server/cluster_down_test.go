package main

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
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
	var nurl string
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			ns := natsServer(t, 0, 0)
			nurl = natsURL(ns)
			n := startServer(t, mode, 1, "--cluster", nurl, "--node", "down-"+mode)
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
	// The last NATS is down (its port closed). A node that never joined
	// lists its own connections too.
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
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		start := time.Now()
		out, err := exec.CommandContext(ctx, serverBin, args...).CombinedOutput()
		took := time.Since(start)
		cancel()
		ee, ok := err.(*exec.ExitError)
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		// The start waits up to 2 s for NATS before serving locally.
		if !ok || ee.ExitCode() != 1 || len(lines) != 1 || !strings.Contains(string(out), "address already in use") || took > 8*time.Second {
			t.Errorf("%s: %v after %v, %d lines:\n%s\nwant exit 1 within 8s and one line saying the port is in use",
				strings.Join(args, " "), err, took, len(lines), out)
		}
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
