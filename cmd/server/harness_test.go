package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd"
	"github.com/forkd/forkd/internal/testharness"
	"github.com/forkd/forkd/master"
)

// serverBin is the real binary under test, built once by TestMain (with
// -race when the tests run with -race, so the server is checked too).
var serverBin string

// envTestServer makes the test binary run as the built-in server, with
// the test-only hooks below (the re-exec-in-TestMain pattern: no test hook
// ships in the real binary). The master re-executes its own binary for the
// workers, and they inherit the variable.
const envTestServer = "FORKD_TEST_AS_SERVER"

// envFailStartFile names a file whose existence makes OnWorkerStart fail
// in the test binary running as the server: a reload whose replacement
// cannot start.
const envFailStartFile = "FORKD_FAIL_START_FILE"

func TestMain(m *testing.M) {
	if os.Getenv(envTestServer) == "1" {
		if err := hookedServer().Run(os.Args); err != nil {
			fmt.Fprintln(os.Stderr, "server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
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
	serverBin, err = testharness.Build(dir, "server", ".", raceEnabled)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
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

// hookedServer is the built-in application with the test hooks: while the
// file envFailStartFile names exists, a worker refuses to start (or, when
// the file says "hang", never ends its start).
func hookedServer() *forkd.Server {
	s := newServer()
	start := s.OnWorkerStart
	s.OnWorkerStart = func(w *forkd.Worker) error {
		if name := os.Getenv(envFailStartFile); name != "" {
			if b, err := os.ReadFile(name); err == nil {
				if string(b) == "hang" { // a start that never ends (a database that never answers)
					select {}
				}
				return fmt.Errorf("refusing to start: %s exists (%s)", name, envFailStartFile)
			}
		}
		return start(w)
	}
	return s
}

// startHooked starts the test binary itself as the server (see
// envTestServer), as startServer does.
func startHooked(t testing.TB, mode string, workers int, args ...string) *server {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(envTestServer, "1")
	s := newTestServer(t, mode)
	s.Bin = exe
	s.launch(workers, args...)
	return s
}

// server is one running `server start` (see internal/testharness), with
// the built-in application's two listeners.
type server struct {
	*testharness.Server
	t        testing.TB
	mode     string
	httpAddr string // where the http and ws listeners are bound (read from status)
	wsAddr   string

	// scheme and client reach the HTTP port for readiness ("http" and a
	// plain client unless a test set them before launch: https, a TLS client).
	scheme string
	client *http.Client
}

// startServer starts the real binary with `start --mode mode --workers n`
// plus args, its listeners on port 0 of 127.0.0.1 (the server picks the
// ports and reports them), waits until it serves, and registers a cleanup
// that stops it, kills its process group, and checks that every process it
// ever had is gone.
func startServer(t testing.TB, mode string, workers int, args ...string) *server {
	t.Helper()
	s := newTestServer(t, mode)
	s.launch(workers, args...)
	return s
}

// newTestServer prepares a server for launch (a test may set scheme and
// client first).
func newTestServer(t testing.TB, mode string) *server {
	return &server{Server: testharness.New(t, serverBin), t: t, mode: mode, scheme: "http",
		client: &http.Client{Timeout: time.Second}}
}

// launch starts s as startServer describes. Flags in args come after the
// harness's --http and --ws, so a test may name other addresses.
func (s *server) launch(workers int, args ...string) {
	s.t.Helper()
	full := append([]string{"--mode", s.mode, "--workers", strconv.Itoa(workers),
		"--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--log-format", "console"}, args...)
	s.Start(nil, full...)
	s.waitReady(20 * time.Second)
}

// waitReady waits until every process is ready, reads the listeners'
// addresses, and waits until GET /hello answers 200 on the HTTP one.
func (s *server) waitReady(limit time.Duration) {
	s.t.Helper()
	if s.client == nil { // a server made without newTestServer
		s.scheme, s.client = "http", &http.Client{Timeout: time.Second}
	}
	s.WaitReady(limit, func(st master.Status) error {
		addrs := testharness.Addrs(st)
		s.httpAddr, s.wsAddr = addrs["http"], addrs["ws"]
		resp, err := s.client.Get(s.scheme + "://" + s.httpAddr + "/hello")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET /hello: %d", resp.StatusCode)
		}
		return nil
	})
}

func (s *server) log() string                        { return s.Log() }
func (s *server) run(args ...string) (string, error) { return s.Run(args...) }
func (s *server) statusErr() (master.Status, error)  { return s.StatusErr() }
func (s *server) status() master.Status              { s.t.Helper(); return s.Status() }
func (s *server) workerPids() map[int]int            { return s.WorkerPids() }
func waitPidGone(pid int, limit time.Duration) bool  { return testharness.WaitPidGone(pid, limit) }
func allReady(st master.Status) bool                 { return testharness.AllReady(st) }
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	testharness.WaitFor(t, limit, what, cond)
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

// readyAddr returns the host:port of the ready line labelled label
// ("chat page: http://127.0.0.1:40123/") in out, what `start` prints once
// it serves: the address a listener asked for port 0 was bound to.
func readyAddr(t testing.TB, out, label string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), label+": "); ok {
			if u, err := url.Parse(rest); err == nil && u.Host != "" {
				return u.Host
			}
		}
	}
	t.Fatalf("no ready line %q in:\n%s", label, out)
	return ""
}
