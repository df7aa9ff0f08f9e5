package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/reactor"
)

// natsServer runs a real NATS server in the test process (port 0: any).
func natsServer(t *testing.T, port int, clusterPort int, routes ...string) *natsserver.Server {
	t.Helper()
	if port == 0 {
		port = natsserver.RANDOM_PORT
	}
	o := &natsserver.Options{Host: "127.0.0.1", Port: port, NoSigs: true, NoLog: true}
	if clusterPort != 0 {
		o.ServerName = fmt.Sprintf("nats-%d", time.Now().UnixNano())
		o.Cluster = natsserver.ClusterOpts{Name: "forkd-test", Host: "127.0.0.1", Port: clusterPort}
		if clusterPort < 0 {
			o.Cluster.Port = natsserver.RANDOM_PORT
		}
		o.Routes = natsserver.RoutesFromStr(strings.Join(routes, ","))
	}
	return runNATS(t, o)
}

// runNATS starts a real NATS server with options o in the test process and
// shuts it down when the test ends.
func runNATS(t *testing.T, o *natsserver.Options) *natsserver.Server {
	t.Helper()
	s, err := natsserver.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

func natsURL(s *natsserver.Server) string {
	return "nats://" + s.Addr().String()
}

// clusterStatus returns node s's view of the cluster (status --cluster --json).
func (s *server) clusterState() (cluster.State, error) {
	var cs cluster.State
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.Bin, "status", "--cluster", "--json", "--run-dir", s.RunDir).Output()
	if err != nil {
		return cs, err
	}
	return cs, json.Unmarshal(out, &cs)
}

// waitNodes waits until node s sees exactly the named nodes up.
func waitNodes(t *testing.T, s *server, limit time.Duration, names ...string) cluster.State {
	t.Helper()
	var cs cluster.State
	waitFor(t, limit, fmt.Sprintf("nodes %v up as seen from %s", names, s.RunDir), func() bool {
		var err error
		if cs, err = s.clusterState(); err != nil || !cs.Connected || len(cs.Nodes) != len(names) {
			return false
		}
		for i, n := range cs.Nodes {
			if !contains(names, n.Name) || (i > 0 && n.Node == cs.Nodes[i-1].Node) {
				return false
			}
		}
		return true
	})
	return cs
}

// pushCode posts body to /push?conn=id on s and returns the status and how
// long the answer took.
func pushCode(t *testing.T, s *server, id, body string) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, _ := s.post("/push?conn="+id, body)
	return resp.StatusCode, time.Since(start)
}

// textOnce waits until m has seen marker and returns how often it saw text.
func textCount(seen []string, text string) int {
	n := 0
	for _, s := range seen {
		if s == text {
			n++
		}
	}
	return n
}

func seenText(text string) func([]string) bool {
	return func(seen []string) bool { return contains(seen, text) }
}

// TestCluster runs three nodes (PROCESS, BASE, PROCESS) on one NATS server
// in the test process: presence, duplicate names, pushes across nodes and
// their outcomes, a room spread over all three, NATS stopped and restarted,
// and a node killed.
func TestCluster(t *testing.T) {
	ns := natsServer(t, 0, 0)
	nurl := natsURL(ns)
	natsPort := ns.Addr().(*net.TCPAddr).Port
	n1 := startServer(t, "process", 2, "--cluster", nurl, "--node", "n1")
	n2 := startServer(t, "base", 2, "--cluster", nurl, "--node", "n2")
	t.Setenv("FORKD_CLUSTER", nurl) // the third joins through the environment
	n3 := startServer(t, "process", 1, "--node", "n3")
	nodes := []*server{n1, n2, n3}
	top := t // what outlives the subtests (a NATS server started in one)
	for _, s := range nodes {
		waitNodes(t, s, 15*time.Second, "n1", "n2", "n3")
	}
	cs := waitNodes(t, n1, time.Second, "n1", "n2", "n3")
	modes := map[string]string{}
	for _, n := range cs.Nodes {
		modes[n.Name] = n.Mode
	}
	if modes["n1"] != "process" || modes["n2"] != "base" || modes["n3"] != "process" {
		t.Fatalf("status --cluster modes: %v", modes)
	}
	if out, err := n1.run("status", "--cluster"); err != nil || !strings.Contains(out, "3 nodes up") {
		t.Fatalf("status --cluster: %v\n%s", err, out)
	}

	t.Run("duplicate-name", func(t *testing.T) {
		dir := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, serverBin, "start", "--workers", "1", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0",
			"--run-dir", dir, "--cluster", nurl, "--node", "n2").CombinedOutput()
		if err == nil || !strings.Contains(string(out), `node "n2" is already running`) {
			t.Fatalf("a second n2: err %v, want a refusal naming the node\n%s", err, out)
		}
		if lines := strings.Count(strings.TrimSpace(string(out)), "\n"); lines > 3 {
			t.Errorf("refusal is not one clear line:\n%s", out)
		}
	})

	room := "lobby.1.*" // dots and wildcards are fine in a room name (subjects carry it encoded)
	m1 := joinChat(t, n1, n1.wsAddr, room, "a")
	m2 := joinChat(t, n2, n2.wsAddr, room, "b")
	m3 := joinChat(t, n3, n3.wsAddr, room, "c")
	members := []*busMember{m1, m2, m3}
	seenNodes := map[uint16]bool{}
	for _, m := range members {
		id, err := strconv.ParseUint(m.id, 10, 64)
		if err != nil || id > reactor.MaxID {
			t.Fatalf("id %q: %v", m.id, err)
		}
		seenNodes[reactor.Node(id)] = true
	}
	if len(seenNodes) != 3 || seenNodes[0] {
		t.Fatalf("ids do not name three distinct nodes: %v", seenNodes)
	}

	t.Run("push", func(t *testing.T) {
		for i, from := range nodes {
			for j, to := range members {
				body := fmt.Sprintf("push %d->%d", i, j)
				if code, _ := pushCode(t, from, to.id, body); code != 200 {
					t.Fatalf("push from node %d to %s on node %d: %d, want 200", i+1, to.id, j+1, code)
				}
				to.waitUntil(t, 5*time.Second, body, seenText(body))
			}
		}
		// An id of n2 that names no connection there: 404, not 503.
		id, _ := strconv.ParseUint(m2.id, 10, 64)
		gone := reactor.MakeID(reactor.Node(id), reactor.Owner(id), reactor.Seq(id)+1000)
		if code, _ := pushCode(t, n1, strconv.FormatUint(gone, 10), "x"); code != 404 {
			t.Fatalf("push to a missing id on another node: %d, want 404", code)
		}
		// An id of a node number nobody holds: unavailable.
		none := reactor.MakeID(reactor.MaxNode, reactor.Owner(id), reactor.Seq(id))
		if code, took := pushCode(t, n1, strconv.FormatUint(none, 10), "x"); code != 503 || took > 3*time.Second {
			t.Fatalf("push to a node that is not there: %d after %s, want 503 within the bound", code, took)
		}
	})

	t.Run("broadcast", func(t *testing.T) {
		for i, from := range nodes {
			body := fmt.Sprintf("to all from %d", i)
			resp, got := from.post("/broadcast?room="+urlQuery(room), body)
			if resp.StatusCode != 200 || got != "3" {
				t.Fatalf("broadcast from node %d: %d %q, want 200 with the cluster-wide count 3", i+1, resp.StatusCode, got)
			}
			mark := body + " end"
			from.post("/broadcast?room="+urlQuery(room), mark)
			for _, m := range members {
				m.waitUntil(t, 5*time.Second, mark, seenText(mark))
				if n := textCount(m.seen, body); n != 1 {
					t.Fatalf("%s got %q %d times, want exactly once", m.name, body, n)
				}
			}
		}
	})

	t.Run("nats-restart", func(t *testing.T) {
		ns.Shutdown()
		ns.WaitForShutdown()
		waitFor(t, 10*time.Second, "n1 to see NATS gone", func() bool {
			cs, err := n1.clusterState()
			return err == nil && !cs.Connected
		})
		// Local traffic is untouched.
		if code, _ := pushCode(t, n1, m1.id, "local while down"); code != 200 {
			t.Fatalf("local push while NATS is down: %d", code)
		}
		m1.waitUntil(t, 5*time.Second, "local push", seenText("local while down"))
		if code, _ := pushCode(t, n2, m2.id, "local base while down"); code != 200 {
			t.Fatalf("local BASE push while NATS is down: %d", code)
		}
		// Cross-node: unavailable, fast.
		if code, took := pushCode(t, n1, m2.id, "x"); code != 503 || took > 3*time.Second {
			t.Fatalf("cross-node push while NATS is down: %d after %s, want 503 within the bound", code, took)
		}
		if out, _ := n1.run("status", "--cluster"); !strings.Contains(out, "NATS unreachable") {
			t.Fatalf("status --cluster does not say NATS is unreachable:\n%s", out)
		}
		// Back on the same port: every node reconnects, re-subscribes its
		// rooms and its id subject, with no restart.
		ns = natsServer(top, natsPort, 0)
		for _, s := range nodes {
			waitNodes(t, s, 20*time.Second, "n1", "n2", "n3")
		}
		waitFor(t, 10*time.Second, "pushes across nodes again", func() bool {
			c, _ := pushCode(t, n1, m2.id, "after restart")
			return c == 200
		})
		m2.waitUntil(t, 5*time.Second, "push after restart", seenText("after restart"))
		resp, got := n3.post("/broadcast?room="+urlQuery(room), "after restart to all")
		if resp.StatusCode != 200 || got != "3" {
			t.Fatalf("broadcast after NATS restart: %d %q", resp.StatusCode, got)
		}
		for _, m := range members {
			m.waitUntil(t, 5*time.Second, "broadcast after restart", seenText("after restart to all"))
		}
	})

	t.Run("node-killed", func(t *testing.T) {
		syscall.Kill(n3.Cmd.Process.Pid, syscall.SIGKILL)
		<-n3.Exited
		start := time.Now()
		code, took := pushCode(t, n1, m3.id, "to the dead")
		if (code != 503 && code != 404) || took > 3*time.Second {
			t.Fatalf("push to a killed node's connection: %d after %s, want 503 or 404 within the bound", code, took)
		}
		// Its members leave the counts once presence drops it.
		waitFor(t, 10*time.Second, "the room count without the dead node", func() bool {
			_, got := n1.post("/broadcast?room="+urlQuery(room), "count")
			return got == "2"
		})
		waitNodes(t, n2, 10*time.Second, "n1", "n2")
		t.Logf("dead node out of counts and presence after %s", time.Since(start))
		// The others still reach each other.
		if code, _ := pushCode(t, n2, m1.id, "still here"); code != 200 {
			t.Fatalf("push between the living: %d", code)
		}
		m1.waitUntil(t, 5*time.Second, "push between the living", seenText("still here"))
	})

	t.Run("connections", func(t *testing.T) {
		out, err := n1.run("connections", "--cluster")
		if err != nil || !strings.Contains(out, m1.id) || !strings.Contains(out, m2.id) {
			t.Fatalf("connections --cluster: %v\n%s", err, out)
		}
	})
}

func urlQuery(s string) string { return url.QueryEscape(s) }

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestClusterNATSFailover runs two nodes on a cluster of three NATS servers
// (routes between three servers in the test process) and kills the NATS
// server the pushing node is connected to mid-test: the pushes keep
// flowing through the other two.
func TestClusterNATSFailover(t *testing.T) {
	s1 := natsServer(t, 0, -1)
	r1 := "nats://" + s1.ClusterAddr().String()
	s2 := natsServer(t, 0, -1, r1)
	s3 := natsServer(t, 0, -1, r1, "nats://"+s2.ClusterAddr().String())
	servers := []*natsserver.Server{s1, s2, s3}
	waitFor(t, 10*time.Second, "the NATS servers routed to each other", func() bool {
		for _, s := range servers {
			if s.NumRoutes() < 2 {
				return false
			}
		}
		return true
	})
	all := natsURL(s1) + "," + natsURL(s2) + "," + natsURL(s3)
	n1 := startServer(t, "base", 2, "--cluster", all, "--node", "n1")
	n2 := startServer(t, "process", 2, "--cluster", all, "--node", "n2")
	waitNodes(t, n1, 15*time.Second, "n1", "n2")
	waitNodes(t, n2, 15*time.Second, "n1", "n2")
	m := joinChat(t, n2, n2.wsAddr, "r", "m")

	cs, err := n1.clusterState()
	if err != nil {
		t.Fatal(err)
	}
	var victim *natsserver.Server
	victimAddr := ""
	for _, s := range servers {
		if strings.HasSuffix(cs.Server, s.Addr().String()) {
			victim, victimAddr = s, s.Addr().String()
		}
	}
	if victim == nil {
		t.Fatalf("n1 is connected to %q, none of %s", cs.Server, all)
	}
	const before, after = 30, 50
	okAfter, failed := 0, 0
	for i := 0; okAfter < after; i++ {
		if i == before {
			victim.Shutdown()
			t.Logf("killed NATS server %s (n1's) after %d pushes", victimAddr, i)
		}
		if i > 1000 {
			t.Fatalf("pushes did not keep flowing after the NATS server died: %d delivered, %d unavailable", okAfter, failed)
		}
		body := "p" + strconv.Itoa(i)
		code, took := pushCode(t, n1, m.id, body)
		switch {
		case code == 200 && i >= before:
			okAfter++
		case code == 200:
		case code == 503 && i >= before:
			failed++
			if took > 3*time.Second {
				t.Fatalf("push %d: 503 after %s, want within the bound", i, took)
			}
			time.Sleep(20 * time.Millisecond)
		default:
			t.Fatalf("push %d: %d", i, code)
		}
	}
	t.Logf("after the kill: %d pushes delivered, %d unavailable during the fail-over", okAfter, failed)
	last := "p-last"
	if code, _ := pushCode(t, n1, m.id, last); code != 200 {
		t.Fatalf("push after fail-over: %d", code)
	}
	m.waitUntil(t, 5*time.Second, "every delivered push", seenText(last))
	if cs, _ := n1.clusterState(); strings.HasSuffix(cs.Server, victimAddr) {
		t.Fatalf("n1 still says it is connected to the dead server %s", cs.Server)
	}
}

// TestClusterEmbed: a node runs NATS inside its master (--cluster-embed)
// and another joins it; a server started without cluster flags has no
// cluster at all.
func TestClusterEmbed(t *testing.T) {
	n1 := startServer(t, "process", 1, "--cluster-embed", "127.0.0.1:0", "--node", "hub")
	cs, err := n1.clusterState()
	if err != nil || cs.Embedded == "" {
		t.Fatalf("status --cluster: %v, embedded %q", err, cs.Embedded)
	}
	n2 := startServer(t, "base", 1, "--cluster", cs.Embedded, "--node", "spoke", "--metrics", "127.0.0.1:0")
	waitNodes(t, n1, 15*time.Second, "hub", "spoke")
	waitNodes(t, n2, 15*time.Second, "hub", "spoke")
	m := joinChat(t, n1, n1.wsAddr, "r", "m")
	if code, _ := pushCode(t, n2, m.id, "via the embedded server"); code != 200 {
		t.Fatalf("push through the embedded NATS: %d", code)
	}
	m.waitUntil(t, 5*time.Second, "push", seenText("via the embedded server"))
	// The caller's metrics count the call, labelled with its node.
	resp, err := httpClient.Get("http://" + n2.status().MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`forkd_cluster_connected{node="spoke",worker="master"} 1`, `forkd_cluster_nodes{node="spoke",worker="master"} 2`,
		`forkd_cluster_calls_total{node="spoke",outcome="ok",worker="master"} 1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics has no %s:\n%s", want, grepLines(string(b), "forkd_cluster"))
		}
	}

	single := startServer(t, "process", 1)
	if st := single.status(); st.Cluster != nil {
		t.Fatalf("a single server reports a cluster: %+v", st.Cluster)
	}
	out, err := single.run("status", "--cluster")
	if err == nil || !strings.Contains(out, "not in a cluster") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("status --cluster on a single server: %v\n%s", err, out)
	}
	// Its ids carry node 0.
	s := joinChat(t, single, single.wsAddr, "r", "s")
	id, _ := strconv.ParseUint(s.id, 10, 64)
	if reactor.Node(id) != 0 {
		t.Fatalf("a single server's id %d names node %d", id, reactor.Node(id))
	}
}

// TestClusterPipe: a pipe message to a worker of another node
// (Worker.SendMessageNode), answered by a pipe message back to the sender's
// node; to a node that is not there, unavailable.
func TestClusterPipe(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "taskapp")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", append(args, "../../testdata/taskapp")...).CombinedOutput(); err != nil {
		t.Fatalf("go build testdata/taskapp: %v\n%s", err, out)
	}
	ns := natsServer(t, 0, 0)
	start := func(mode, name string) *server {
		s := newTestServer(t, mode)
		s.Bin = bin
		s.launch(2, "--cluster", natsURL(ns), "--node", name)
		return s
	}
	n1 := start("base", "p1")
	n2 := start("process", "p2")
	waitNodes(t, n1, 15*time.Second, "p1", "p2")
	cs := waitNodes(t, n2, 15*time.Second, "p1", "p2")
	var pipe struct {
		Kind       string `json:"kind"`
		PongWorker int    `json:"pong_worker"`
	}
	for to := 0; to < 2; to++ {
		_, body := n1.get(fmt.Sprintf("/pipe?node=%d&to=%d", cs.Node, to))
		if err := json.Unmarshal([]byte(body), &pipe); err != nil || pipe.Kind != "ok" || pipe.PongWorker != to {
			t.Fatalf("pipe from p1 to worker %d of p2: %s", to, body)
		}
	}
	_, body := n1.get(fmt.Sprintf("/pipe?node=%d&to=0", reactor.MaxNode))
	if err := json.Unmarshal([]byte(body), &pipe); err != nil || pipe.Kind != "unavailable" {
		t.Fatalf("pipe to a node that is not there: %s", body)
	}

	// Exists, Join, Leave, RoomCount and Close from a BASE node on a
	// connection of a PROCESS node.
	c := n2.dial(n2.wsAddr, "/")
	var hello struct {
		Conn string `json:"conn"`
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := c.ReadJSON(&hello); err != nil || hello.Conn == "" {
		t.Fatalf("taskapp welcome: %v", err)
	}
	op := func(q string) map[string]any {
		_, body := n1.get("/connop?conn=" + hello.Conn + "&" + q)
		var v map[string]any
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("/connop?%s: %q", q, body)
		}
		return v
	}
	for _, step := range []struct {
		q, key string
		want   any
	}{
		{"op=exists", "exists", true},
		{"op=join&room=far", "kind", "ok"},
		{"op=count&room=far", "count", 1.0},
		{"op=leave&room=far", "kind", "ok"},
		{"op=count&room=far", "count", 0.0},
		{"op=close", "kind", "ok"},
	} {
		if got := op(step.q); got[step.key] != step.want {
			t.Fatalf("/connop?%s from another node: %v, want %s=%v", step.q, got, step.key, step.want)
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4000 {
		t.Fatalf("closed from another node: %v, want close 4000", err)
	}
	waitFor(t, 5*time.Second, "the closed connection gone on its node", func() bool { return op("op=exists")["exists"] == false })
}

// TestClusterLateNATS: NATS is down when the nodes start. They start
// anyway and serve locally, say so in status, keep reconnecting, and join
// once NATS is up: ids issued from then on name the node (a BASE node's
// workers learn the number from the master), and pushes cross nodes.
func TestClusterLateNATS(t *testing.T) {
	// The one place a port is chosen before its server listens: the nodes
	// must be given NATS's address while nothing listens there (the point
	// of the test). The port is held (bound, not listening: a connection
	// to it is refused, as to a free one) until NATS starts on it: freed
	// for the seconds the nodes take to start, a listener of another test
	// running meanwhile could take it, and NATS could not start.
	port, release := holdPort(t)
	nurl := "nats://127.0.0.1:" + strconv.Itoa(port)
	n1 := startServer(t, "base", 2, "--cluster", nurl, "--node", "late1")
	n2 := startServer(t, "process", 1, "--cluster", nurl, "--node", "late2")
	for _, s := range []*server{n1, n2} {
		cs, err := s.clusterState()
		if err != nil || cs.Connected || cs.Node != 0 {
			t.Fatalf("before NATS: %+v, %v", cs, err)
		}
		if !strings.Contains(s.log(), "NATS unreachable; serving locally") {
			t.Fatalf("the log does not say NATS is unreachable:\n%s", s.log())
		}
		// No node is up: an empty list, not null, for JSON readers.
		if out, err := s.run("status", "--cluster", "--json"); err != nil || !strings.Contains(out, `"nodes":[]`) {
			t.Fatalf("status --cluster --json before NATS: %v\n%s", err, out)
		}
		// Plain status says so too, not only --cluster and --json.
		if out, err := s.run("status"); err != nil || !strings.Contains(out, "NATS unreachable: serving locally") {
			t.Fatalf("status does not say NATS is unreachable: %v\n%s", err, out)
		}
	}
	early := joinChat(t, n1, n1.wsAddr, "r", "early")
	if code, _ := pushCode(t, n1, early.id, "local before NATS"); code != 200 {
		t.Fatalf("local push before NATS: %d", code)
	}
	early.waitUntil(t, 5*time.Second, "local push", seenText("local before NATS"))

	release()
	natsServer(t, port, 0)
	cs := waitNodes(t, n1, 20*time.Second, "late1", "late2")
	waitNodes(t, n2, 20*time.Second, "late1", "late2")
	var num1 int
	for _, n := range cs.Nodes {
		if n.Name == "late1" {
			num1 = n.Node
		}
	}
	if out, err := n1.run("status"); err != nil || !strings.Contains(out, "2 nodes up") {
		t.Fatalf("status once joined: %v\n%s", err, out)
	}
	// Every BASE worker issues ids of the node now.
	var late *busMember
	perWorker := map[int]bool{}
	for i := 0; len(perWorker) < 2; i++ {
		if i > 50 {
			t.Fatalf("could not reach both BASE workers in 50 connections: %v", perWorker)
		}
		m := joinChat(t, n1, n1.wsAddr, "r", "late"+strconv.Itoa(i))
		id, _ := strconv.ParseUint(m.id, 10, 64)
		if int(reactor.Node(id)) != num1 {
			t.Fatalf("id %d from worker %d names node %d, want %d", id, m.worker, reactor.Node(id), num1)
		}
		perWorker[m.worker] = true
		late = m
	}
	if code, _ := pushCode(t, n2, late.id, "across after a late join"); code != 200 {
		t.Fatalf("push across after a late join: %d", code)
	}
	late.waitUntil(t, 5*time.Second, "push across", seenText("across after a late join"))
	// The early connection keeps its node-0 id and its own node reaches it.
	if code, _ := pushCode(t, n1, early.id, "local after"); code != 200 {
		t.Fatalf("push to a node-0 id on its node: %d", code)
	}
}
