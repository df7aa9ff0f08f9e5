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

// TestStartRefusalIsOneLine: a `start` that refuses to run prints one line,
// the reason, and exits 1, in the foreground as with -d: nothing the server
// that never ran logged at info (cluster: connected, joined, embedded NATS
// listening) comes before it. Cases: the run dir in use, the node name
// taken in the cluster, and a listener port in use once the cluster was
// joined.
func TestStartRefusalIsOneLine(t *testing.T) {
	hub := startServer(t, "process", 1, "--cluster-embed", "127.0.0.1:0", "--node", "hub")
	cs, err := hub.clusterState()
	if err != nil || cs.Embedded == "" {
		t.Fatalf("status --cluster: %v, embedded %q", err, cs.Embedded)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	for _, tc := range []struct {
		name string
		args []string // after start's --workers 1
		want string
	}{
		{"run-dir-in-use", []string{"--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--run-dir", hub.RunDir}, "already running"},
		{"node-name-taken", []string{"--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--cluster", cs.Embedded, "--node", "hub"}, `node "hub" is already running`},
		{"port-in-use-after-join", []string{"--http", busy.Addr().String(), "--ws", "127.0.0.1:0", "--cluster-embed", "127.0.0.1:0", "--node", "other"}, "address already in use"},
	} {
		for _, daemon := range []bool{false, true} {
			name := tc.name
			if daemon {
				name += "/daemon"
			}
			t.Run(name, func(t *testing.T) {
				args := append([]string{"start", "--workers", "1"}, tc.args...)
				if !strings.Contains(strings.Join(args, " "), "--run-dir") {
					args = append(args, "--run-dir", filepath.Join(t.TempDir(), "run"))
				}
				if daemon {
					args = append(args, "-d")
				}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				out, err := exec.CommandContext(ctx, serverBin, args...).CombinedOutput()
				ee, ok := err.(*exec.ExitError)
				lines := strings.Split(strings.TrimSpace(string(out)), "\n")
				if !ok || ee.ExitCode() != 1 || len(lines) != 1 || !strings.Contains(string(out), tc.want) {
					t.Errorf("%s: got %v and %d lines:\n%s\nwant exit 1 and one line saying %q", strings.Join(args, " "), err, len(lines), out, tc.want)
				}
			})
		}
	}
}
