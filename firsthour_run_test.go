package forkd_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd"
)

// wsDial opens a WebSocket to ws://addr+path.
func wsDial(t *testing.T, addr, path string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.Dial("ws://"+addr+path, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("dial ws://%s%s: %v", addr, path, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wsRead(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func wsSay(t *testing.T, c *websocket.Conn, s string) string {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
	return wsRead(t, c)
}

// testResume: in PROCESS mode a connection a new worker takes over (reload
// or crash, in turn) sees no second welcome: OnOpen does not run again and,
// without OnResume, nothing does; with OnResume (the per-connection state
// recipe) the state is rebuilt, and still nothing is sent.
func testResume(t *testing.T, app devApp) {
	s := startDev(t, app.bin, "--mode", "process", "--workers", "1")
	ev := wsDial(t, s.addrs["events"], "/")
	if w := wsRead(t, ev); !strings.HasPrefix(w, "welcome ") {
		t.Fatalf("first message: got %q, want the welcome", w)
	}
	st := wsDial(t, s.addrs["state"], "/?name=ann")
	if w := wsRead(t, st); w != "hello ann" {
		t.Fatalf("first state message: got %q, want hello ann", w)
	}
	if got := wsSay(t, st, "x"); got != "ann #1: x" {
		t.Fatalf("state before: got %q", got)
	}
	for round, how := range []string{"reload", "crash", "reload", "crash"} {
		old := s.workerPids()[0]
		if how == "reload" {
			if r := runCLI(t, s.dir, s.bin, "reload", "--run-dir", s.runDir); r.err != nil || r.stderr != "" {
				t.Fatalf("reload: %v", r)
			}
		} else if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 60*time.Second, how+": worker 0 replaced", func() bool {
			p := s.workerPids()[0]
			return p != 0 && p != old
		})
		msg := fmt.Sprintf("m%d", round)
		if got := wsSay(t, ev, msg); got != msg {
			t.Fatalf("round %d (%s): after the takeover the client got %q, want its echo %q and no second welcome", round, how, got, msg)
		}
		if got := wsSay(t, st, msg); got != "ann #1: "+msg {
			t.Fatalf("round %d (%s): state connection got %q, want %q (state rebuilt by OnResume, no greeting)", round, how, got, "ann #1: "+msg)
		}
	}
}

// connIDs returns the ids `connections --json` lists.
func (s *devServer) connIDs() map[string]int {
	s.t.Helper()
	r := runCLI(s.t, s.dir, s.bin, "connections", "--json", "--run-dir", s.runDir)
	if r.err != nil {
		s.t.Fatalf("connections: %v", r)
	}
	var infos []forkd.ConnInfo
	if err := jsonUnmarshal(r.stdout, &infos); err != nil {
		s.t.Fatalf("connections --json: %v: %s", err, r.stdout)
	}
	out := map[string]int{}
	for _, i := range infos {
		out[i.ID] = i.Worker
	}
	return out
}

// checkID fails unless id is a decimal below 2^53.
func checkID(t *testing.T, what, id string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(id, 10, 64)
	if err != nil || v >= 1<<53 || v == 0 {
		t.Fatalf("%s: id %q is not a number in 1..2^53-1", what, id)
	}
	if _, err := forkd.ParseConnID(id); err != nil {
		t.Fatalf("%s: ParseConnID(%q): %v", what, id, err)
	}
	return v
}

// push posts to devapp's /push and returns the status code.
func (s *devServer) push(id, body string) int {
	s.t.Helper()
	resp, err := httpPost("http://"+s.addrs["api root"]+"/push?conn="+id, body)
	if err != nil {
		s.t.Fatalf("push: %v", err)
	}
	return resp
}

// testIDs: ids of every kind of owner (the PROCESS-mode master, BASE
// worker slots) are below 2^53, everywhere they show; an id of a BASE
// worker since restarted, or of a server since restarted, reaches nobody.
func testIDs(t *testing.T, app devApp) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startDev(t, app.bin, "--mode", mode, "--workers", "2")
			welcome := map[string]*websocket.Conn{}
			for i := 0; i < 8; i++ {
				c := wsDial(t, s.addrs["events"], "/")
				w := wsRead(t, c)
				id := strings.TrimPrefix(w, "welcome ")
				checkID(t, "welcome", id)
				welcome[id] = c
			}
			listed := s.connIDs()
			for id := range welcome {
				if _, ok := listed[id]; !ok {
					t.Errorf("id %s of a welcome is not in `connections`: %v", id, listed)
				}
			}
			for id := range listed {
				checkID(t, "connections", id)
			}
			for id := range welcome {
				if code := s.push(id, "hi"); code != 200 {
					t.Fatalf("push to live %s: %d", id, code)
				}
			}
			old := map[string]bool{}
			var victim string
			for id := range listed {
				victim = id
				old[id] = true
			}
			if mode == "base" {
				// Kill the worker holding victim: its replacement must not
				// know the id.
				w := listed[victim]
				pid := s.workerPids()[w]
				syscall.Kill(pid, syscall.SIGKILL)
				waitUntil(t, 60*time.Second, "the worker replaced", func() bool { p := s.workerPids()[w]; return p != 0 && p != pid })
			} else {
				// A restart of the whole server (its master holds the ids).
				if r := runCLI(t, s.dir, s.bin, "restart", "-d", "--run-dir", s.runDir); r.err != nil {
					t.Fatalf("restart -d: %v", r)
				}
				s.status()
			}
			if code := s.push(victim, "stale"); code != 404 {
				t.Errorf("push to %s, an id of the previous incarnation: got %d, want 404", victim, code)
			}
			for i := 0; i < 12; i++ {
				c := wsDial(t, s.addrs["events"], "/")
				id := strings.TrimPrefix(wsRead(t, c), "welcome ")
				checkID(t, "after the restart", id)
				if old[id] {
					t.Errorf("id %s issued again after the restart", id)
				}
			}
		})
	}
}

// testBench: bench on a program without http/ws listeners is refused at
// once saying what is missing; pointed at the program's own listeners and
// paths it runs; --ports pins the ports.
func testBench(t *testing.T, app devApp) {
	dir := t.TempDir()
	t0 := time.Now()
	oneLine(t, "bench with no http listener", runCLI(t, dir, app.bin, "bench", "--duration", "100ms"), `no listener named "http"`, "--http-listener")
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("refusal took %s, want at once", d)
	}
	r := runCLI(t, dir, app.bin, "bench", "--modes", "base", "--workers", "1", "--duration", "100ms", "--conns", "1",
		"--scenarios", "push", "--http-listener", "api", "--ws-listener", "events")
	if r.err == nil || !strings.Contains(r.stderr, "chat protocol") || !strings.Contains(r.stderr, "leave push out") {
		t.Errorf("bench --scenarios push on a program without the chat: want a refusal naming the protocol: %v", r)
	}
	r = runCLI(t, dir, app.bin, "bench", "--modes", "base", "--workers", "1", "--duration", "100ms", "--conns", "1",
		"--scenarios", "http", "--http-listener", "api", "--http-path", "/nope", "--ws-listener", "events", "--ws-path", "/e")
	if r.err == nil || !strings.Contains(r.stderr, "--http-path") {
		t.Errorf("bench on a path answering 404: want a refusal naming --http-path: %v", r)
	}
	// Below Linux's ephemeral range (32768 and up by default), so that no
	// client connection of another test takes a port of the range, and
	// wide enough for the ones a parallel test program may hold.
	lo := 10000 + os.Getpid()%400*50
	const width = 49
	r = runCLI(t, dir, app.bin, "bench", "--modes", "process,base", "--workers", "1", "--duration", "300ms", "--conns", "2",
		"--scenarios", "http,echo", "--http-listener", "api", "--http-path", "/ping", "--ws-listener", "events", "--ws-path", "/e",
		"--ports", fmt.Sprintf("%d-%d", lo, lo+width))
	if r.err != nil {
		t.Fatalf("bench on the program's own paths: %v", r)
	}
	for _, want := range []string{"http", "echo", "process", "base"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("bench table lacks %q:\n%s", want, r.stdout)
		}
	}
	ports := regexp.MustCompile(`started: http 127\.0\.0\.1:(\d+), ws 127\.0\.0\.1:(\d+)`).FindAllStringSubmatch(r.stderr, -1)
	if len(ports) < 2 {
		t.Fatalf("no 'started' progress lines:\n%s", r.stderr)
	}
	for _, p := range ports {
		for _, s := range p[1:] {
			if n, _ := strconv.Atoi(s); n < lo || n > lo+width {
				t.Errorf("port %d outside --ports %d-%d", n, lo, lo+width)
			}
		}
	}
}

// testWatch: with --watch a replaced binary reloads the workers soon after
// it is complete (the guide: within 2 s; the test allows a loaded machine
// 6 s), and a half-written one never does; twice, once written slowly in
// place of the old file and once renamed over it.
func testWatch(t *testing.T, app devApp) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "devapp")
	copyFile(t, app.bin, exe)
	s := startDev(t, exe, "--mode", "process", "--workers", "1", "--watch")
	s.bin, s.Bin = app.bin, app.bin // the CLI commands: exe cannot be run while the test writes it
	version := func() string {
		_, b := get(t, s.addrs["api root"], "/version")
		return string(b)
	}
	if v := version(); v != "v1" {
		t.Fatalf("version: got %q, want v1", v)
	}
	for round, next := range []struct{ bin, version string }{{app.binV2, "v2"}, {app.bin, "v1"}} {
		pid := s.workerPids()[0]
		reloads := strings.Count(s.log(), "binary changed, reloading")
		var done time.Time
		if round == 0 {
			// Written slowly: half of it, a pause longer than the watcher's
			// patience, then the rest.
			b, err := os.ReadFile(next.bin)
			if err != nil {
				t.Fatal(err)
			}
			os.Remove(exe)
			f, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(b[:len(b)/2]); err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * time.Second)
			if n := strings.Count(s.log(), "binary changed, reloading"); n != reloads {
				t.Fatalf("reloaded a half-written binary:\n%s", s.log())
			}
			if p := s.workerPids()[0]; p != pid || version() != "v1" {
				t.Fatalf("worker replaced while the binary was half-written (pid %d -> %d)", pid, p)
			}
			if !strings.Contains(s.log(), "not a complete executable") {
				t.Errorf("the watcher did not say why it waits:\n%s", s.log())
			}
			if _, err := f.Write(b[len(b)/2:]); err != nil {
				t.Fatal(err)
			}
			f.Close()
			done = time.Now()
		} else {
			tmp := exe + ".new"
			copyFile(t, next.bin, tmp)
			if err := os.Rename(tmp, exe); err != nil {
				t.Fatal(err)
			}
			done = time.Now()
		}
		// The watcher takes about 0.6 s (a 200 ms poll, 300 ms unchanged,
		// the ELF check): the guide says within 2 s. The test allows 6 s: a
		// race-built master on a loaded machine can stall a second or two;
		// what this catches, a replacement the watcher never notices (a
		// rename, a rewrite in place), is beyond any bound.
		for strings.Count(s.log(), "binary changed, reloading") == reloads {
			if time.Since(done) > 6*time.Second {
				t.Fatalf("round %d: no reload within 6s of the binary being replaced:\n%s", round, s.log())
			}
			time.Sleep(20 * time.Millisecond)
		}
		waitUntil(t, 60*time.Second, "the new binary's workers", func() bool { return version() == next.version })
		if p := s.workerPids()[0]; p == pid {
			t.Errorf("round %d: worker pid unchanged", round)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// testStatic: the guide's static-files recipe (fasthttp.FS with gzip and
// brotli) serves the file whole, compressed when asked.
func testStatic(t *testing.T, app devApp) {
	root := t.TempDir()
	body := []byte(strings.Repeat("function hello() { return 'hello, world'; }\n", 500))
	writeFile(t, filepath.Join(root, "app.js"), string(body))
	t.Setenv("DEVAPP_STATIC", root)
	t.Setenv("DEVAPP_STATIC_CACHE", t.TempDir())
	s := startDev(t, app.bin, "--mode", "base", "--workers", "1")
	for _, enc := range []string{"", "gzip", "br"} {
		resp, b := get(t, s.addrs["api root"], "/static/app.js", "Accept-Encoding", enc)
		if resp.StatusCode != 200 {
			t.Fatalf("%q: status %d", enc, resp.StatusCode)
		}
		if got := resp.Header.Get("Content-Encoding"); got != enc {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q", enc, got)
		}
		var plain []byte
		var err error
		switch enc {
		case "gzip":
			plain, err = fasthttp.AppendGunzipBytes(nil, b)
		case "br":
			plain, err = fasthttp.AppendUnbrotliBytes(nil, b)
		default:
			plain = b
		}
		if err != nil || !bytes.Equal(plain, body) {
			t.Errorf("%q: body (%d bytes, %v) is not the file", enc, len(b), err)
		}
		if enc != "" && len(b) >= len(body)/2 {
			t.Errorf("%q: %d bytes for a %d-byte file: not compressed", enc, len(b), len(body))
		}
	}
	if resp, _ := get(t, s.addrs["api root"], "/static/missing.js"); resp.StatusCode != 404 {
		t.Errorf("missing file: %d, want 404", resp.StatusCode)
	}
}
