package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestBenchClusterPorts: with --ports, a cluster scenario's NATS server
// takes its port from the range, as the two nodes' listeners do (it took a
// random port before).
func TestBenchClusterPorts(t *testing.T) {
	// Below Linux's ephemeral range (32768 and up by default), so that no
	// client connection takes a port of the range; apart from the range
	// the root package's bench test uses (10000-29999 there, by pid).
	lo := 30000 + os.Getpid()%50*50
	const width = 49
	_, _, stderr := runBench(t, 3*time.Minute, 0, "--modes", "process", "--workers", "1", "--duration", "300ms", "--conns", "2",
		"--members", "10", "--scenarios", "cluster-push", "--reference", "none", "--ports", fmt.Sprintf("%d-%d", lo, lo+width))
	m := regexp.MustCompile(`cluster: NATS nats://127\.0\.0\.1:(\d+), node A http 127\.0\.0\.1:(\d+), node B ws 127\.0\.0\.1:(\d+)`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no 'cluster: NATS' progress line:\n%s", stderr)
	}
	for i, what := range []string{"NATS server", "node A http", "node B ws"} {
		if n, _ := strconv.Atoi(m[i+1]); n < lo || n > lo+width {
			t.Errorf("%s on port %d, outside --ports %d-%d", what, n, lo, lo+width)
		}
	}
}
