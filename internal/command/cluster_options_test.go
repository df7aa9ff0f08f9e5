package command

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The cluster flags come from the command line, the config file and
// FORKD_CLUSTER; without them there is no cluster at all.
func TestClusterOptions(t *testing.T) {
	s := fuzzServer()
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	o, err := s.loadOptions([]string{"--run-dir", run})
	if err != nil || o.Cluster != nil {
		t.Fatalf("no cluster flags: cluster %+v, err %v", o.Cluster, err)
	}
	o, err = s.loadOptions([]string{"--run-dir", run, "--cluster", "nats://a:4222,nats://b:4222", "--node", "n1", "--cluster-timeout", "2s"})
	if err != nil || o.Cluster == nil || strings.Join(o.Cluster.URLs, " ") != "nats://a:4222 nats://b:4222" ||
		o.Cluster.Name != "n1" || o.Cluster.Timeout != 2*time.Second {
		t.Fatalf("flags: %+v, %v", o.Cluster, err)
	}
	cfg := filepath.Join(dir, "forkd.yaml")
	os.WriteFile(cfg, []byte("cluster-embed: 127.0.0.1:0\nnode: from-file\n"), 0o600)
	o, err = s.loadOptions([]string{"--run-dir", run, "--config", cfg})
	if err != nil || o.Cluster == nil || o.Cluster.Embed != "127.0.0.1:0" || o.Cluster.Name != "from-file" {
		t.Fatalf("config file: %+v, %v", o.Cluster, err)
	}
	// The embedded server's routes, from the file (a YAML list) and the
	// command line (comma-separated).
	os.WriteFile(cfg, []byte("cluster-embed: 127.0.0.1:0\ncluster-route-addr: 127.0.0.1:6222\ncluster-routes:\n  - nats-route://h1:6222\n  - h2:6222\n"), 0o600)
	o, err = s.loadOptions([]string{"--run-dir", run, "--config", cfg})
	if err != nil || o.Cluster == nil || o.Cluster.RouteAddr != "127.0.0.1:6222" || strings.Join(o.Cluster.Routes, " ") != "nats-route://h1:6222 h2:6222" {
		t.Fatalf("routes from the config file: %+v, %v", o.Cluster, err)
	}
	o, err = s.loadOptions([]string{"--run-dir", run, "--cluster-embed", "127.0.0.1:0", "--cluster-routes", "h1:6222,h2:6222"})
	if err != nil || o.Cluster == nil || len(o.Cluster.Routes) != 2 {
		t.Fatalf("--cluster-routes: %+v, %v", o.Cluster, err)
	}
	t.Setenv(EnvCluster, "nats://env:4222")
	o, err = s.loadOptions([]string{"--run-dir", run})
	if err != nil || o.Cluster == nil || len(o.Cluster.URLs) != 1 || o.Cluster.URLs[0] != "nats://env:4222" {
		t.Fatalf("FORKD_CLUSTER: %+v, %v", o.Cluster, err)
	}
	t.Setenv(EnvCluster, "")
	for _, bad := range [][]string{
		{"--cluster", "a:4222"},
		// nats.go ignores the scheme (http:// connected) and retried a
		// port out of range forever; both started.
		{"--cluster", "http://127.0.0.1:4222"},
		{"--cluster", "foo://x"},
		{"--cluster", "nats://127.0.0.1:99999"},
		{"--cluster", "nats://:4222"},
		{"--node", "x"},
		{"--cluster", "nats://a:4222", "--cluster-cert", "c.pem"},
		{"--cluster", "nats://a:4222", "--cluster-timeout", "0s"},
		{"--cluster", "nats://a:4222", "--cluster-routes", "h1:6222"}, // routes need the embedded server
		{"--cluster-route-addr", "127.0.0.1:6222"},
	} {
		if _, err := s.loadOptions(append([]string{"--run-dir", run}, bad...)); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
	if got := redactArgs([]string{"start", "--cluster-token", "s3cret", "--cluster-token=s3cret"}); strings.Contains(strings.Join(got, " "), "s3cret") {
		t.Errorf("cluster token not redacted: %v", got)
	}
}
