package main

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/forkd/forkd/reactor"
)

// TestClusterEmbedRoutes: two nodes each run their own NATS server
// (--cluster-embed), the second routing to the first's route listener
// (--cluster-routes to its --cluster-route-addr), and a third joins the
// second's NATS server as a client. They form one cluster: distinct node
// numbers, pushes both ways, a room over the three. Then the first node
// stops: the other two keep working through the second's NATS server.
func TestClusterEmbedRoutes(t *testing.T) {
	n1 := startServer(t, "process", 1, "--node", "r1", "--cluster-embed", "127.0.0.1:0", "--cluster-route-addr", "127.0.0.1:0")
	cs1, err := n1.clusterState()
	if err != nil || cs1.RouteAddr == "" {
		t.Fatalf("status --cluster of r1: %+v, %v", cs1, err)
	}
	n2 := startServer(t, "base", 2, "--node", "r2", "--cluster-embed", "127.0.0.1:0", "--cluster-routes", cs1.RouteAddr)
	cs2, err := n2.clusterState()
	if err != nil || cs2.Embedded == "" || cs2.Routes < 1 {
		t.Fatalf("status --cluster of r2: %+v, %v", cs2, err)
	}
	n3 := startServer(t, "process", 1, "--node", "r3", "--cluster", cs2.Embedded)
	nodes := []*server{n1, n2, n3}
	for _, s := range nodes {
		waitNodes(t, s, 15*time.Second, "r1", "r2", "r3")
	}
	room := "routed"
	members := []*busMember{joinChat(t, n1, n1.wsAddr, room, "a"), joinChat(t, n2, n2.wsAddr, room, "b"), joinChat(t, n3, n3.wsAddr, room, "c")}
	seen := map[uint16]bool{}
	for _, m := range members {
		id, _ := strconv.ParseUint(m.id, 10, 64)
		seen[reactor.Node(id)] = true
	}
	if len(seen) != 3 || seen[0] {
		t.Fatalf("ids do not name three distinct nodes: %v", seen)
	}
	for i, from := range nodes {
		for j, to := range members {
			body := fmt.Sprintf("routed push %d->%d", i, j)
			if code, _ := pushCode(t, from, to.id, body); code != 200 {
				t.Fatalf("push from r%d to r%d: %d, want 200", i+1, j+1, code)
			}
			to.waitUntil(t, 5*time.Second, body, seenText(body))
		}
	}
	if resp, got := n3.post("/broadcast?room="+room, "to the routed room"); resp.StatusCode != 200 || got != "3" {
		t.Fatalf("broadcast over three nodes on two routed NATS servers: %d %q, want 3", resp.StatusCode, got)
	}
	for _, m := range members {
		m.waitUntil(t, 5*time.Second, "broadcast", seenText("to the routed room"))
	}
	// r1 (and its NATS server) stops: r2 and r3 go on through r2's.
	if out, err := n1.run("stop"); err != nil {
		t.Fatalf("stop r1: %v\n%s", err, out)
	}
	n1.Stopped = true
	waitNodes(t, n2, 15*time.Second, "r2", "r3")
	if code, _ := pushCode(t, n3, members[1].id, "after r1 left"); code != 200 {
		t.Fatalf("push r3->r2 after r1 stopped: %d", code)
	}
	members[1].waitUntil(t, 5*time.Second, "push after r1 left", seenText("after r1 left"))
}

// TestClusterUnjoinedIDs: two nodes (PROCESS, then BASE) start in fresh run dirs while
// NATS is unreachable (a listener of the test that closes every
// connection), so their ids carry node 0. Their ids differ (the unjoined
// start scatters the id counter), and a push through one node to the
// other's connection answers 404 instead of reaching the connection of the
// same id on the wrong node (both counters started from the same clock
// second, so the first ids were equal: node b took node a's id for its own).
func TestClusterUnjoinedIDs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	nurl := "nats://" + ln.Addr().String()
	for round := 0; round < 3; round++ {
		mode := []string{"process", "base", "process"}[round] // a BASE worker's first lease too
		a := startServer(t, mode, 1, "--cluster", nurl, "--node", "ua")
		b := startServer(t, mode, 1, "--cluster", nurl, "--node", "ub")
		ma := joinChat(t, a, a.wsAddr, "r", "alice")
		mb := joinChat(t, b, b.wsAddr, "r", "bob")
		for _, m := range []*busMember{ma, mb} {
			id, _ := strconv.ParseUint(m.id, 10, 64)
			if reactor.Node(id) != 0 {
				t.Fatalf("round %d: an unjoined node issued id %d of node %d", round, id, reactor.Node(id))
			}
		}
		if ma.id == mb.id {
			t.Fatalf("round %d: two unjoined nodes issued the same id %s", round, ma.id)
		}
		if code, _ := pushCode(t, b, ma.id, "for alice"); code != 404 {
			t.Fatalf("round %d: alice's id pushed through node ub: %d, want 404", round, code)
		}
		if code, _ := pushCode(t, a, ma.id, "alice's own"); code != 200 {
			t.Fatalf("round %d: alice's id on her node: %d", round, code)
		}
		ma.waitUntil(t, 5*time.Second, "her push", seenText("alice's own"))
		// Node ub delivers in order: had alice's push reached bob, it would
		// be before his own.
		if code, _ := pushCode(t, b, mb.id, "bob's own"); code != 200 {
			t.Fatalf("round %d: bob's id on his node: %d", round, code)
		}
		mb.waitUntil(t, 5*time.Second, "his push", seenText("bob's own"))
		if textCount(mb.seen, "for alice") != 0 {
			t.Fatalf("round %d: bob received alice's push", round)
		}
		for _, s := range []*server{a, b} {
			s.run("stop")
			s.Stopped = true
		}
	}
}
