package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/master"
)

// serverBin is the real binary under test, built once by TestMain (with
// -race when the tests run with -race, so the server is checked too).
var serverBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "forkd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Workers started with --user must be able to run the binary.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	serverBin = filepath.Join(dir, "server")
	args := []string{"build", "-o", serverBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// A race-built binary sleeps a second at exit by default: every CLI
	// call (status, stop) would pay it.
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// server is one running `server start`, in its own process group.
type server struct {
	t        testing.TB
	mode     string
	dir      string
	runDir   string
	httpAddr string
	wsAddr   string
	logPath  string
	cmd      *exec.Cmd
	exited   chan struct{}

	mu   sync.Mutex
	pids map[int]bool // master and every worker pid seen: all must be gone at the end

	// scheme and client reach the HTTP port for readiness ("http" and a
	// plain client unless a test set them before launch: https, a TLS client).
	scheme string
	client *http.Client

	bin string // the program run ("": serverBin)
}

// binary returns the program s runs.
func (s *server) binary() string {
	if s.bin != "" {
		return s.bin
	}
	return serverBin
}

// startServer starts the real binary with `start --mode mode --workers n`
// plus args on free loopback ports, waits until it serves, and registers a
// cleanup that stops it, kills its process group, and checks that every
// process it ever had is gone.
func startServer(t testing.TB, mode string, workers int, args ...string) *server {
	t.Helper()
	s := newTestServer(t, mode)
	s.launch(workers, args...)
	return s
}

// newTestServer prepares a server for launch (a test may set scheme and
// client first).
func newTestServer(t testing.TB, mode string) *server {
	return &server{t: t, mode: mode, dir: t.TempDir(), pids: map[int]bool{}, scheme: "http",
		client: &http.Client{Timeout: time.Second}}
}

// launch starts s as startServer describes.
func (s *server) launch(workers int, args ...string) {
	t := s.t
	t.Helper()
	mode := s.mode
	s.runDir = filepath.Join(s.dir, "run")
	s.httpAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	s.wsAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	s.logPath = filepath.Join(s.dir, "server.log")
	logf, err := os.Create(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	full := append([]string{"start", "--mode", mode, "--workers", strconv.Itoa(workers),
		"--http", s.httpAddr, "--ws", s.wsAddr, "--run-dir", s.runDir, "--log-format", "console"}, args...)
	s.cmd = exec.Command(s.binary(), full...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); logf.Close(); close(s.exited) }()
	s.pids[s.cmd.Process.Pid] = true
	t.Cleanup(s.cleanup)
	s.waitReady(20 * time.Second)
}

func (s *server) waitReady(limit time.Duration) {
	s.t.Helper()
	if s.client == nil { // a server made without newTestServer
		s.scheme, s.client = "http", &http.Client{Timeout: time.Second}
	}
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			s.t.Fatalf("server exited before it was ready (last error: %v)\n%s", last, s.log())
		default:
		}
		resp, err := s.client.Get(s.scheme + "://" + s.httpAddr + "/hello")
		if err == nil {
			resp.Body.Close()
			// Every process ready, not only the one that answered: in BASE
			// mode a worker serves as soon as it is ready, while the others
			// (and the task workers) may still be starting.
			if resp.StatusCode == 200 {
				if st, err := s.statusErr(); err == nil && allReady(st) {
					return
				}
			}
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("server not ready after %s (last error: %v)\n%s", limit, last, s.log())
}

func (s *server) cleanup() {
	t := s.t
	select {
	case <-s.exited:
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, s.binary(), "stop", "--run-dir", s.runDir).CombinedOutput()
		cancel()
		if err != nil && !t.Failed() {
			t.Errorf("server stop: %v\n%s", err, out)
		}
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("server still running 10s after stop")
		}
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
	s.mu.Lock()
	pids := s.pids
	s.mu.Unlock()
	for pid := range pids {
		if !waitPidGone(pid, 5*time.Second) {
			t.Errorf("process %d outlived the test; killing it", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if t.Failed() {
		t.Logf("server log:\n%s", s.log())
	}
}

// waitPidGone waits until pid no longer exists (zombies count as gone).
func waitPidGone(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || bytes.Contains(b, []byte(") Z ")) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// run runs a CLI command against this server's run dir.
func (s *server) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.binary(), append(args, "--run-dir", s.runDir)...).CombinedOutput()
	return string(out), err
}

func (s *server) statusErr() (master.Status, error) {
	var st master.Status
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.binary(), "status", "--json", "--run-dir", s.runDir).Output()
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("status --json: %v: %s", err, out)
	}
	s.mu.Lock()
	s.pids[st.MasterPid] = true
	for _, w := range append(append(st.Workers, st.TaskWorkers...), st.Processes...) {
		if w.Pid > 0 {
			s.pids[w.Pid] = true
		}
	}
	s.mu.Unlock()
	return st, nil
}

// status returns `server status --json`, recording every pid in it.
func (s *server) status() master.Status {
	s.t.Helper()
	st, err := s.statusErr()
	if err != nil {
		s.t.Fatalf("status: %v", err)
	}
	return st
}

// workerPids returns the ready workers' pids by id.
func (s *server) workerPids() map[int]int {
	out := map[int]int{}
	for _, w := range s.status().Workers {
		if w.State == master.StateReady {
			out[w.ID] = w.Pid
		}
	}
	return out
}

// waitFor polls cond until it holds or limit passes.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

var httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// get does GET http://httpAddr+path and returns the response and body.
func (s *server) get(path string) (*http.Response, string) {
	s.t.Helper()
	resp, err := httpClient.Get("http://" + s.httpAddr + path)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// post does POST http://httpAddr+path with body.
func (s *server) post(path, body string) (*http.Response, string) {
	s.t.Helper()
	resp, err := httpClient.Post("http://"+s.httpAddr+path, "text/plain", strings.NewReader(body))
	if err != nil {
		s.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// dial opens a WebSocket to addr+path (addr: s.wsAddr or s.httpAddr).
func (s *server) dial(addr, path string) *websocket.Conn {
	s.t.Helper()
	c, err := s.dialErr(addr, path)
	if err != nil {
		s.t.Fatalf("dial ws://%s%s: %v", addr, path, err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

func (s *server) dialErr(addr, path string) (*websocket.Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial("ws://"+addr+path, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	return c, nil
}

// chatMsg is a message of the built-in chat.
type chatMsg struct {
	Type   string `json:"type"`
	Conn   string `json:"conn"`
	Worker int    `json:"worker"`
	Room   string `json:"room"`
	Name   string `json:"name"`
	From   string `json:"from"`
	Text   string `json:"text"`
	TS     int64  `json:"ts"`
}

// readJSON reads one text message as a chatMsg within limit.
func readJSON(t testing.TB, c *websocket.Conn, limit time.Duration) chatMsg {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(limit))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m chatMsg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("bad JSON %q: %v", b, err)
	}
	return m
}

// isReset reports whether err is a connection reset or refused.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

// httpResp is a minimal parsed HTTP response from a raw connection.
type httpResp struct {
	StatusCode int
	Header     http.Header
}

func dialTCP(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.SetDeadline(time.Now().Add(15 * time.Second))
	}
	return c, err
}

// readHTTP reads one response (status, headers, Content-Length body).
func readHTTP(t testing.TB, br *bufio.Reader) (*httpResp, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return &httpResp{StatusCode: resp.StatusCode, Header: resp.Header}, string(b)
}

// allReady reports whether every worker, task worker and user process in st
// is ready.
func allReady(st master.Status) bool {
	for _, w := range append(append(st.Workers, st.TaskWorkers...), st.Processes...) {
		if w.State != master.StateReady {
			return false
		}
	}
	return len(st.Workers) > 0
}
