package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClusterConnectionsMissing: `connections --cluster` over two BASE
// nodes (cc-a, cc-b; two workers each) on a real NATS server.
//
// Worker 1 of cc-b is SIGSTOPped. Asked on cc-b (its own page) and on cc-a
// (cc-b's page over NATS), the listing has every other connection of both
// nodes and one line naming cc-b's worker 1 (on stdout after the table;
// on stderr with --json, stdout staying one object per line); exit 0, a
// partial answer being an answer. That worker's connections used to be
// left out in silence. Once it runs again, everything is listed and
// nothing named.
//
// status --cluster names the stopped worker too, and not once it runs.
//
// Then cc-b's master is SIGSTOPped: cc-a lists its own connections and
// names the node, exit 0 (it used to exit 1, as if the command had failed).
func TestClusterConnectionsMissing(t *testing.T) {
	ns := natsServer(t, 0, 0)
	nurl := natsURL(ns)
	// The watchdog would kill a worker stopped for twice --worker-timeout.
	a := startServer(t, "base", 2, "--cluster", nurl, "--node", "cc-a", "--worker-timeout", "60s")
	b := startServer(t, "base", 2, "--cluster", nurl, "--node", "cc-b", "--worker-timeout", "60s")
	waitNodes(t, b, 20*time.Second, "cc-a", "cc-b")
	num := 0
	for _, n := range waitNodes(t, a, 20*time.Second, "cc-a", "cc-b").Nodes {
		if n.Name == "cc-b" {
			num = n.Node
		}
	}
	ma := usersOnBoth(t, a, "cc", "ua", 2)
	mb := usersOnBoth(t, b, "cc", "ub", 2)
	hidden := memberOn(mb, 1)
	listed := []string{ma[0].id, ma[1].id, memberOn(mb, 0).id}

	line := fmt.Sprintf("node cc-b (number %d): worker 1 did not answer within 2s: its connections are not listed", num)
	cont := sigstop(t, b.workerPids()[1])
	for _, s := range []*server{b, a} {
		out, errOut, err := connsRun(t, s, "--cluster")
		ids := clusterRows(out)
		if err != nil || errOut != "" {
			t.Fatalf("connections --cluster on %s, cc-b's worker 1 stopped: %v (want exit 0), stderr %q\n%s", s.RunDir, err, errOut, out)
		}
		if !strings.Contains(out, line+"\n") {
			t.Fatalf("connections --cluster on %s: want the line %q:\n%s", s.RunDir, line, out)
		}
		checkListed(t, "connections --cluster", ids, listed, hidden, out)

		out, errOut, err = connsRun(t, s, "--cluster", "--json")
		if err != nil || strings.TrimSpace(errOut) != line {
			t.Fatalf("connections --cluster --json on %s: %v (want exit 0), stderr %q, want %q", s.RunDir, err, errOut, line)
		}
		ids = map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var c struct {
				ID     string `json:"id"`
				Node   string `json:"node"`
				Worker int    `json:"worker"`
			}
			if err := json.Unmarshal([]byte(l), &c); err != nil {
				t.Fatalf("--cluster --json stdout: a line that is not a connection: %v: %q", err, l)
			}
			if c.Node == "cc-b" && c.Worker == 1 {
				t.Fatalf("--cluster --json lists a connection of cc-b's stopped worker 1: %q", l)
			}
			ids[c.ID] = c.Node
		}
		checkListed(t, "connections --cluster --json", ids, listed, hidden, out)
	}
	// status --cluster counts the node's connections without that
	// worker, and says so (the count used to leave them out in silence).
	uncounted := fmt.Sprintf("node cc-b (number %d): worker 1 did not answer the count in time: its connections are not in CONNS", num)
	var statusOut string
	waitFor(t, 20*time.Second, "status --cluster to name cc-b's stopped worker", func() bool {
		out, err := a.run("status", "--cluster")
		statusOut = out
		return err == nil && strings.Contains(out, uncounted+"\n")
	})
	cont()
	waitFor(t, 20*time.Second, "status --cluster to count every worker again", func() bool {
		out, err := a.run("status", "--cluster")
		statusOut = out
		return err == nil && strings.Contains(out, "2 nodes up") && !strings.Contains(out, "did not answer")
	})
	t.Logf("status --cluster:\n%s", statusOut)
	all := append(listed, hidden.id)
	waitFor(t, 20*time.Second, "every connection listed again", func() bool {
		out, errOut, err := connsRun(t, a, "--cluster")
		ids := clusterRows(out)
		for _, id := range all {
			if ids[id] == "" {
				return false
			}
		}
		return err == nil && errOut == "" && !strings.Contains(out, "did not answer")
	})

	// cc-b's master stopped. Presence drops a node 3.5 s after its last
	// heartbeat: if the command looked after that (a loaded machine), it
	// asked cc-a alone ("on 1 nodes"): not this case, so again.
	nodeLine := fmt.Sprintf("node cc-b (number %d) did not answer within 10s: its connections are not listed", num)
	for try := 1; ; try++ {
		cont := sigstop(t, b.Cmd.Process.Pid)
		out, errOut, err := connsRun(t, a, "--cluster")
		cont()
		if strings.Contains(out, " on 1 nodes\n") && try < 3 {
			t.Logf("try %d: cc-b was out of presence before the command asked:\n%s", try, out)
			waitNodes(t, a, 20*time.Second, "cc-a", "cc-b")
			continue
		}
		if err != nil || errOut != "" || !strings.Contains(out, nodeLine+"\n") || !strings.Contains(out, " on 2 nodes\n") {
			t.Fatalf("connections --cluster with cc-b's master stopped: %v (want exit 0), stderr %q; want %q:\n%s", err, errOut, nodeLine, out)
		}
		ids := clusterRows(out)
		for _, id := range []string{ma[0].id, ma[1].id} {
			if ids[id] != "cc-a" {
				t.Fatalf("cc-a's connection %s not listed with cc-b stopped:\n%s", id, out)
			}
		}
		for _, m := range mb {
			if ids[m.id] != "" {
				t.Fatalf("cc-b's connection %s listed while cc-b's master is stopped:\n%s", m.id, out)
			}
		}
		break
	}
}

// sigstop stops pid and waits until every thread of it is stopped; the
// function it returns (also run at cleanup, before the servers are ended)
// lets it run again.
func sigstop(t *testing.T, pid int) func() {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	cont := func() {
		if stopped {
			stopped = false
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(cont)
	waitFor(t, 10*time.Second, fmt.Sprintf("pid %d stopped", pid), func() bool { return allThreadsStopped(pid) })
	return cont
}

// clusterRows maps the connection ids of `connections --cluster`'s table
// to their node.
func clusterRows(out string) map[string]string {
	ids := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] != "NODE" && strings.HasPrefix(f[0], "cc-") {
			ids[f[1]] = f[0]
		}
	}
	return ids
}

// checkListed: ids (id -> node) has every id of listed and not hidden's.
func checkListed(t *testing.T, what string, ids map[string]string, listed []string, hidden *busMember, out string) {
	t.Helper()
	for _, id := range listed {
		if ids[id] == "" {
			t.Fatalf("%s: connection %s not listed:\n%s", what, id, out)
		}
	}
	if ids[hidden.id] != "" {
		t.Fatalf("%s: %s of the stopped worker listed:\n%s", what, hidden.id, out)
	}
}
