package forkd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testharness"
	"github.com/forkd/forkd/master"
)

// devApp is testdata/devapp built twice: as v1 and as v2 (for --watch).
type devApp struct {
	bin, binV2 string
}

// buildDevApp builds testdata/devapp (with -race under -race), v1 and v2.
func buildDevApp(t *testing.T) devApp {
	t.Helper()
	dir := t.TempDir()
	app := devApp{bin: filepath.Join(dir, "devapp"), binV2: filepath.Join(dir, "devapp-v2")}
	for _, b := range []struct{ out, ldflags string }{{app.bin, ""}, {app.binV2, "-X main.version=v2"}} {
		args := []string{"build", "-o", b.out}
		if apiRace {
			args = append(args, "-race")
		}
		if b.ldflags != "" {
			args = append(args, "-ldflags", b.ldflags)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		out, err := exec.CommandContext(ctx, "go", append(args, "./testdata/devapp")...).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("go build ./testdata/devapp: %v\n%s", err, out)
		}
	}
	return app
}

// cliResult is one CLI command's outcome, its two streams apart.
type cliResult struct {
	stdout, stderr string
	err            error
}

func (r cliResult) String() string {
	return fmt.Sprintf("err %v\nstdout: %q\nstderr: %q", r.err, r.stdout, r.stderr)
}

// runCLI runs bin with args in dir ("" for the current one).
func runCLI(t *testing.T, dir, bin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	return cliResult{stdout: so.String(), stderr: se.String(), err: err}
}

// devServer is one devapp server (foreground or daemon; see
// internal/testharness): every pid it ever had must be gone at the end.
type devServer struct {
	*testharness.Server
	t      *testing.T
	bin    string
	dir    string // working directory of start
	runDir string
	addrs  map[string]string // listener label -> host:port, from the ready lines
}

// newDevServer prepares a devapp server in a temporary directory.
func newDevServer(t *testing.T, bin string) *devServer {
	h := testharness.New(t, bin)
	return &devServer{Server: h, t: t, bin: bin, dir: h.Dir, runDir: h.RunDir}
}

// portZero are the flags that put all of devapp's listeners on free ports.
var portZero = []string{"--listen", "api=127.0.0.1:0", "--listen", "events=127.0.0.1:0", "--listen", "state=127.0.0.1:0"}

// readyLine is "LABEL: SCHEME://HOST:PORT/".
var readyLine = regexp.MustCompile(`(?m)^([a-z ]+): (?:http|ws)://([0-9.]+:[0-9]+)/$`)

func parseReady(out string) map[string]string {
	m := map[string]string{}
	for _, g := range readyLine.FindAllStringSubmatch(out, -1) {
		m[g[1]] = g[2]
	}
	return m
}

// startDev starts bin in the foreground (`start` plus args, listeners on
// free ports) and waits for its ready lines.
func startDev(t *testing.T, bin string, args ...string) *devServer {
	t.Helper()
	s := newDevServer(t, bin)
	full := append(append([]string{"start", "--run-dir", s.runDir, "--log-format", "console"}, portZero...), args...)
	cmd := exec.Command(bin, full...)
	cmd.Dir = s.dir
	s.StartCmd(cmd)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if s.addrs = parseReady(s.log()); len(s.addrs) == 3 {
			break
		}
		select {
		case <-s.Exited:
			t.Fatalf("devapp exited before it was ready:\n%s", s.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("devapp printed no ready lines in 60s:\n%s", s.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.status()
	return s
}

func (s *devServer) log() string { return s.Log() }

// status is `status --json`, recording every pid.
func (s *devServer) status() master.Status { s.t.Helper(); return s.Status() }

// workerPids returns the ready workers' pids by id.
func (s *devServer) workerPids() map[int]int { return s.WorkerPids() }

// get fetches http://addr+path.
func get(t *testing.T, addr, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	tr := &http.Transport{DisableCompression: true, DisableKeepAlives: true}
	resp, err := (&http.Client{Timeout: 30 * time.Second, Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp, b.Bytes()
}

// oneLine checks a failing command's streams: nothing on stdout, one line
// on stderr containing every want.
func oneLine(t *testing.T, what string, r cliResult, want ...string) {
	t.Helper()
	if r.err == nil {
		t.Errorf("%s: exit 0, want a failure\n%v", what, r)
		return
	}
	if r.stdout != "" {
		t.Errorf("%s: stdout %q, want nothing (diagnostics go to stderr)", what, r.stdout)
	}
	if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); len(lines) != 1 {
		t.Errorf("%s: %d lines on stderr, want one:\n%s", what, len(lines), r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("%s: stderr %q does not say %q", what, r.stderr, w)
		}
	}
}

// holdPort listens on a free loopback port and keeps it (a port in use).
func holdPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// httpPost posts body to url and returns the status code.
func httpPost(url, body string) (int, error) {
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
