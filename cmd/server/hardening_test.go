package main

// Hardening (issue 7): limits, bad input, slow clients, crashes and the
// control channel, each checked on the real binary in both modes with real
// clients: net/http and fasthttp/websocket where the client is well behaved,
// raw TCP where it is not.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/internal/testharness"
	"github.com/forkd/forkd/master"
)

var hardenModes = []string{"process", "base"}

// startHardened is startServer, plus a check that the server (built with
// -race when the tests are) reported no data race while the test ran.
func startHardened(t *testing.T, mode string, workers int, args ...string) *server {
	t.Helper()
	s := startServer(t, mode, workers, args...)
	t.Cleanup(func() {
		if strings.Contains(s.log(), "WARNING: DATA RACE") {
			t.Error("the server reported a data race")
		}
	})
	return s
}

// inModes runs f as a subtest per server mode.
func inModes(t *testing.T, f func(t *testing.T, mode string)) {
	for _, mode := range hardenModes {
		t.Run(mode, func(t *testing.T) { f(t, mode) })
	}
}

// --- raw HTTP -------------------------------------------------------------

// rawHTTP sends req on a new TCP connection and reads one response. The
// request is written in the background: a server may answer (413, 431)
// and close before it has read all of it.
func rawHTTP(t *testing.T, addr string, req []byte) (resp *http.Response, body string, c net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go c.Write(req)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	return resp, string(b), &bufConn{Conn: c, br: br}
}

// bufConn is a net.Conn whose reads go through the reader that parsed the
// response, so nothing it buffered is lost.
type bufConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *bufConn) Read(b []byte) (int, error) { return c.br.Read(b) }

// expectEOF asserts that the server closes c within limit (a reset counts).
func expectEOF(t *testing.T, c net.Conn, limit time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(limit))
	n, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open %s later (%d more bytes read)", limit, n)
	}
	if err != nil && !isReset(err) {
		t.Fatalf("waiting for the close: %v", err)
	}
}

// postRaw is a POST of n bytes to path; its Host is an address, as the
// operator API wants without a token (see forkd.APIGuard).
func postRaw(path string, n int) []byte {
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", path, n)
	return append([]byte(head), bytes.Repeat([]byte("b"), n)...)
}

// getWithHeaderBlock is a GET whose whole header block (request line to the
// blank line) is exactly n bytes.
func getWithHeaderBlock(n int) []byte {
	head := "GET /hello HTTP/1.1\r\nHost: forkd\r\nX-Pad: "
	tail := "\r\n\r\n"
	return []byte(head + strings.Repeat("p", n-len(head)-len(tail)) + tail)
}

// countLog counts the server log lines containing all of parts.
func (s *server) countLog(parts ...string) int {
	n := 0
	for _, line := range strings.Split(s.log(), "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			n++
		}
	}
	return n
}

// expectLogged waits until exactly want lines of the log match parts (and
// checks a moment later that no duplicate followed).
func (s *server) expectLogged(t *testing.T, want int, parts ...string) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("%d log lines with %q", want, parts), func() bool {
		return s.countLog(parts...) >= want
	})
	time.Sleep(100 * time.Millisecond)
	if got := s.countLog(parts...); got != want {
		t.Fatalf("log lines with %q: got %d, want %d", parts, got, want)
	}
}

// --- raw WebSocket ----------------------------------------------------------

// rawWS is a WebSocket client that does the upgrade by hand and writes
// whatever frames it is told to, valid or not.
type rawWS struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRawWS(t *testing.T, addr, path string) *rawWS {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	key := make([]byte, 16)
	rand.Read(key)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, addr, base64.StdEncoding.EncodeToString(key))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: got HTTP %d, want 101", resp.StatusCode)
	}
	return &rawWS{t: t, c: c, br: br}
}

// frame encodes one frame; a client must mask, so masked=false is a
// protocol violation on purpose.
func wsFrame(fin bool, op byte, payload []byte, masked bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var mbit byte
	if masked {
		mbit = 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, mbit|byte(n))
	case n <= 0xFFFF:
		out = append(out, mbit|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, mbit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !masked {
		return append(out, payload...)
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	out = append(out, key[:]...)
	for i, b := range payload {
		out = append(out, b^key[i%4])
	}
	return out
}

func (w *rawWS) write(b []byte) {
	w.t.Helper()
	if _, err := w.c.Write(b); err != nil {
		w.t.Fatalf("write frame: %v", err)
	}
}

// readFrame reads one (unmasked, server) frame.
func (w *rawWS) readFrame() (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(w.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(w.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(w.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if h[1]&0x80 != 0 {
		return 0, nil, errors.New("server sent a masked frame")
	}
	if n > 64<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(w.br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// expectClose reads until a close frame, checks its code, answers it as a
// polite client does (close frame, then FIN), and checks that the server
// closes the connection.
func (w *rawWS) expectClose(code int) {
	w.t.Helper()
	w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		op, p, err := w.readFrame()
		if err != nil {
			w.t.Fatalf("waiting for close %d: %v", code, err)
		}
		if op != websocket.CloseMessage {
			continue
		}
		if len(p) < 2 {
			w.t.Fatalf("close frame without a code, want %d", code)
		}
		if got := int(binary.BigEndian.Uint16(p)); got != code {
			w.t.Fatalf("close code: got %d (%q), want %d", got, p[2:], code)
		}
		w.write(wsFrame(true, websocket.CloseMessage, p[:2], true))
		w.c.(*net.TCPConn).CloseWrite()
		break
	}
	expectEOF(w.t, &bufConn{Conn: w.c, br: w.br}, 5*time.Second)
}

// --- WebSocket helpers ------------------------------------------------------

// echoOK sends msg on an /echo connection and expects it back.
func echoOK(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("echo write %q: %v", msg, err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("echo read %q: %v", msg, err)
	}
	if string(b) != msg {
		t.Fatalf("echo: got %q, want %q", b, msg)
	}
}

// expectCloseCode reads until the server's close frame and checks its code.
func expectCloseCode(t *testing.T, c *websocket.Conn, code int, limit time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(limit))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("want close %d, got %v", code, err)
		}
		if ce.Code != code {
			t.Fatalf("close code: got %d (%q), want %d", ce.Code, ce.Text, code)
		}
		return
	}
}

// rssTotal is the resident memory of the master and every worker.
func (s *server) rssTotal() int64 {
	st := s.status()
	n := st.MasterRSS
	for _, w := range append(st.Workers, st.TaskWorkers...) {
		n += w.RSS
	}
	return n
}

// closeIdleClients drops the test's own idle keep-alive connections, so the
// server's connection count is what the test opens.
func (s *server) closeIdleClients(t *testing.T) {
	t.Helper()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	httpClient.Transport.(*http.Transport).CloseIdleConnections()
	waitFor(t, 10*time.Second, "no connections open", func() bool { return s.status().Connections == 0 })
}

// --- 1. Sizes -----------------------------------------------------------------

// TestHardenSizes: with --max-package-size 1MiB a body or WebSocket message
// of exactly the limit is accepted, one byte more gets 413 / close 1009;
// a header block over 16 KiB gets 431.
func TestHardenSizes(t *testing.T) {
	const limit = 1 << 20
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1, "--max-package-size", "1MiB")

		// A body of exactly the limit is read and handed to the handler:
		// /push answers for an unknown connection only after reading it.
		resp, body, _ := rawHTTP(t, s.httpAddr, postRaw("/push?conn=1", limit))
		if resp.StatusCode != 404 || !strings.Contains(body, "no such connection") {
			t.Fatalf("body of exactly %d bytes: got %d %q, want 404 no such connection", limit, resp.StatusCode, body)
		}
		resp, body, c := rawHTTP(t, s.httpAddr, postRaw("/push?conn=1", limit+1))
		if resp.StatusCode != 413 {
			t.Fatalf("body of %d bytes: got %d %q, want 413", limit+1, resp.StatusCode, body)
		}
		expectEOF(t, c, 5*time.Second)
		s.expectLogged(t, 1, "bad request", "status=413")

		// Header block: 16 KiB fits, 64 KiB is 431 and the connection closes.
		resp, body, _ = rawHTTP(t, s.httpAddr, getWithHeaderBlock(16<<10))
		if resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("16 KiB header block: got %d %q, want 200 hello", resp.StatusCode, body)
		}
		resp, body, c = rawHTTP(t, s.httpAddr, getWithHeaderBlock(64<<10))
		if resp.StatusCode != 431 {
			t.Fatalf("64 KiB header block: got %d %q, want 431", resp.StatusCode, body)
		}
		expectEOF(t, c, 5*time.Second)
		s.expectLogged(t, 1, "bad request", "status=431")

		// WebSocket: exactly the limit echoes, one byte more closes 1009;
		// a connection opened before is unaffected.
		bystander := s.dial(s.wsAddr, "/echo")
		echoOK(t, bystander, "before")
		ws := s.dial(s.wsAddr, "/echo")
		big := bytes.Repeat([]byte{0xA5}, limit)
		ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := ws.WriteMessage(websocket.BinaryMessage, big); err != nil {
			t.Fatal(err)
		}
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		op, got, err := ws.ReadMessage()
		if err != nil || op != websocket.BinaryMessage || !bytes.Equal(got, big) {
			t.Fatalf("message of exactly %d bytes: got op %d, %d bytes, err %v; want it echoed", limit, op, len(got), err)
		}
		if err := ws.WriteMessage(websocket.BinaryMessage, append(big, 0)); err != nil {
			t.Fatal(err)
		}
		expectCloseCode(t, ws, websocket.CloseMessageTooBig, 10*time.Second)
		s.expectLogged(t, 1, "websocket message too big")
		echoOK(t, bystander, "after")
	})
}

// --- 2. Bad input -----------------------------------------------------------

// TestHardenProtocolErrors: a client that breaks the WebSocket protocol is
// closed with the code RFC 6455 asks for, a client that does not speak HTTP
// gets 400; each is logged once, and other connections go on.
func TestHardenProtocolErrors(t *testing.T) {
	cases := []struct {
		name  string
		frame []byte
		code  int
		log   string
	}{
		{name: "invalid UTF-8 text", frame: wsFrame(true, websocket.TextMessage, []byte("ok \xff\xfe"), true),
			code: websocket.CloseInvalidFramePayloadData, log: "invalid UTF-8"},
		{name: "unmasked client frame", frame: wsFrame(true, websocket.TextMessage, []byte("hello"), false),
			code: websocket.CloseProtocolError, log: "websocket protocol error"},
		{name: "bad opcode", frame: wsFrame(true, 3, []byte("x"), true),
			code: websocket.CloseProtocolError, log: "websocket protocol error"},
		{name: "fragmented ping", frame: wsFrame(false, websocket.PingMessage, []byte("p"), true),
			code: websocket.CloseProtocolError, log: "websocket protocol error"},
	}
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1)
		bystander := s.dial(s.wsAddr, "/echo")
		echoOK(t, bystander, "before")
		logged := map[string]int{}
		for _, tc := range cases {
			t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
				w := dialRawWS(t, s.wsAddr, "/echo")
				w.write(tc.frame)
				w.expectClose(tc.code)
				logged[tc.log]++
				s.expectLogged(t, logged[tc.log], tc.log)
				echoOK(t, bystander, "after "+tc.name)
			})
		}
		t.Run("not_HTTP", func(t *testing.T) {
			for _, addr := range []string{s.httpAddr, s.wsAddr} {
				resp, _, c := rawHTTP(t, addr, []byte("\x16\x03\x01garbage\r\n\r\n"))
				if resp.StatusCode != 400 {
					t.Fatalf("%s: got %d, want 400", addr, resp.StatusCode)
				}
				expectEOF(t, c, 5*time.Second)
			}
			s.expectLogged(t, 2, "bad request", "status=400")
			echoOK(t, bystander, "after garbage")
			if r, body := s.get("/hello"); r.StatusCode != 200 || body != "hello" {
				t.Fatalf("GET /hello after garbage: got %d %q", r.StatusCode, body)
			}
		})
	})
}

// --- 3. Slow and idle clients ---------------------------------------------------

// TestHardenSlowClients: a slowloris is cut by --read-timeout (408), an idle
// keep-alive connection by the shorter of --idle-timeout and --heartbeat-idle, a silent WebSocket by
// --heartbeat-idle while an active one lives on, and pings get pongs.
func TestHardenSlowClients(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1, "--read-timeout", "2s", "--idle-timeout", "1s", "--heartbeat-idle", "500ms")

		t.Run("slowloris", func(t *testing.T) {
			c, err := net.Dial("tcp", s.httpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			stop := make(chan struct{})
			defer close(stop)
			go func() { // the header, a byte at a time, never finished
				req := []byte("GET /hello HTTP/1.1\r\nHost: forkd\r\nX-Slow: " + strings.Repeat("s", 100))
				for _, b := range req {
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
					select {
					case <-stop:
						return
					case <-time.After(200 * time.Millisecond):
					}
				}
			}()
			start := time.Now()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("slowloris: want a 408, got %v after %s", err, time.Since(start))
			}
			resp.Body.Close()
			took := time.Since(start)
			if resp.StatusCode != 408 || took < 1500*time.Millisecond || took > 5*time.Second {
				t.Fatalf("slowloris: got %d after %s, want 408 after about 2s", resp.StatusCode, took)
			}
			expectEOF(t, &bufConn{Conn: c, br: br}, 3*time.Second)
		})

		t.Run("idle_keepalive", func(t *testing.T) {
			// The clock starts before the request: the server's idle spell
			// starts after it, so the close comes at least 500 ms minus the
			// coarse clock's lag (a sweep tick, 100 ms) later. Started after
			// the answer was read, it also lost however long this client
			// took to read it (a loaded machine: more than the 50 ms the
			// bound of 350 ms left).
			start := time.Now()
			resp, body, c := rawHTTP(t, s.httpAddr, []byte("GET /hello HTTP/1.1\r\nHost: forkd\r\n\r\n"))
			if resp.StatusCode != 200 || body != "hello" || resp.Close {
				t.Fatalf("got %d %q close=%v, want a kept-alive 200 hello", resp.StatusCode, body, resp.Close)
			}
			expectEOF(t, c, 5*time.Second)
			// --heartbeat-idle (500ms) is the shorter: it closes idle
			// keep-alive connections too (TestHeartbeatIdleHTTP). A server
			// that does not keep the connection alive closes it at once.
			if took := time.Since(start); took < 300*time.Millisecond {
				t.Fatalf("idle connection closed %s after its request, want about 500ms", took)
			}
		})

		t.Run("heartbeat", func(t *testing.T) {
			// The clock starts before the silent connection's upgrade, its
			// last activity: started after both dials, it lost the active
			// one's dial (hundreds of ms on a loaded machine) and a correct
			// heartbeat could look early.
			start := time.Now()
			silent := s.dial(s.wsAddr, "/echo")
			active := s.dial(s.wsAddr, "/echo")
			// The active client sends every 100 ms whatever its echoes do
			// (they are read by another goroutine): waiting for each echo
			// before the next send made the gap between two sends the
			// round trip through the server plus 100 ms, and a round trip
			// of 400 ms (a loaded machine, -race, PROCESS mode's two hops)
			// let the heartbeat end an active connection.
			activeErr := make(chan error, 2)
			go func() {
				for i := 0; i < 20; i++ { // 2s, four heartbeat periods
					active.SetWriteDeadline(time.Now().Add(2 * time.Second))
					if err := active.WriteMessage(websocket.TextMessage, []byte("beat "+strconv.Itoa(i))); err != nil {
						activeErr <- err
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}()
			go func() {
				for i := 0; i < 20; i++ {
					msg := "beat " + strconv.Itoa(i)
					active.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, b, err := active.ReadMessage(); err != nil || string(b) != msg {
						activeErr <- fmt.Errorf("read %q: %q, %v", msg, b, err)
						return
					}
				}
				activeErr <- nil
			}()
			expectCloseCode(t, silent, websocket.CloseNormalClosure, 5*time.Second)
			if took := time.Since(start); took < 400*time.Millisecond {
				t.Fatalf("silent connection closed %s after its upgrade, want about 500ms", took)
			}
			if err := <-activeErr; err != nil {
				t.Fatalf("active connection: %v", err)
			}
			// Silent from now on, the active one goes the same way, at
			// least 500 ms after its last message: counting the lines
			// before that (one, for the silent connection) raced it when
			// the last echo came late. Each connection is logged once.
			expectCloseCode(t, active, websocket.CloseNormalClosure, 5*time.Second)
			s.expectLogged(t, 2, "heartbeat timeout")
		})

		t.Run("ping", func(t *testing.T) {
			c := s.dial(s.wsAddr, "/echo")
			pongs := make(chan string, 1)
			c.SetPongHandler(func(data string) error { pongs <- data; return nil })
			if err := c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			echoOK(t, c, "after ping") // reading processes the pong
			select {
			case p := <-pongs:
				if p != "are you there" {
					t.Fatalf("pong: got %q, want %q", p, "are you there")
				}
			default:
				t.Fatal("no pong")
			}
		})
	})
}

// --- 4. Slow consumers ----------------------------------------------------------

// TestHardenSlowConsumer: a client that never reads while 100 MiB (more
// where the kernel's socket buffers are larger) is pushed to it: pushes
// start failing with "connection send buffer full" (503), server memory
// stays bounded, and once the client reads again pushes work.
func TestHardenSlowConsumer(t *testing.T) {
	const chunk = 64 << 10
	// What a correct server may accept for a client that never reads: the
	// kernel's socket buffers (the server's send buffer and the client's
	// receive buffer, each autotuned up to its sysctl's maximum: 4 MiB and
	// 32 MiB on this machine, other machines differ) plus the 1 MiB send
	// buffer and the pushes in flight; at least 64 MiB. Twice that, and at
	// least 100 MiB, is pushed: a server without the bound accepts it all.
	bound := max(64<<20, kernelSocketMax(t)+16<<20)
	pushes := int64(max(100<<20, 2*bound) / chunk)
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1)
		c := s.dial(s.wsAddr, "/chat?room=slow&name=sloth")
		welcome := readJSON(t, c, 5*time.Second)
		if welcome.Type != "welcome" || welcome.Conn == "" {
			t.Fatalf("got %+v, want a welcome", welcome)
		}
		rss0 := s.rssTotal()

		var next, ok, full atomic.Int64
		var mu sync.Mutex
		other := map[string]int{}
		body := strings.Repeat("x", chunk)
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= pushes {
					resp, err := httpClient.Post("http://"+s.httpAddr+"/push?conn="+welcome.Conn, "text/plain", strings.NewReader(body))
					if err != nil {
						mu.Lock()
						other[err.Error()]++
						mu.Unlock()
						continue
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch {
					case resp.StatusCode == 200:
						ok.Add(1)
					case resp.StatusCode == 503 && strings.Contains(string(b), "connection send buffer full"):
						full.Add(1)
					default:
						mu.Lock()
						other[fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))]++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		rss1 := s.rssTotal()
		growth := rss1 - rss0
		t.Logf("%s: %d pushes of 64 KiB: %d queued (%d MiB, most in kernel socket buffers), %d refused as buffer full; RSS %d -> %d MiB",
			mode, pushes, ok.Load(), ok.Load()*chunk>>20, full.Load(), rss0>>20, rss1>>20)
		if len(other) > 0 {
			t.Fatalf("unexpected push answers: %v", other)
		}
		if full.Load() == 0 {
			t.Fatalf("no push failed with 503 connection send buffer full (%d succeeded)", ok.Load())
		}
		// What was accepted is the kernel's socket buffers plus at most
		// the 1 MiB send buffer, not all that was pushed.
		if accepted := ok.Load() * chunk; accepted > int64(bound) {
			t.Fatalf("%d MiB accepted for a client that never reads (bound %d MiB)", accepted>>20, bound>>20)
		}
		if growth > 100<<20 {
			t.Fatalf("server RSS grew by %d MiB while pushing %d MiB to a client that never reads", growth>>20, pushes*chunk>>20)
		}
		// OnBufferFull runs in the worker serving the connection, in both
		// modes (in PROCESS mode the master tells it), once per filling,
		// not once per refused push. The kernel's socket buffers grow
		// (autotuning) while the client does not read, so the buffer may
		// empty and fill again: full and drained alternate.
		waitFor(t, 5*time.Second, "a send buffer full line", func() bool {
			return len(bufferEvents(s.log(), welcome.Conn)) > 0
		})
		checkAlternating(t, bufferEvents(s.log(), welcome.Conn))

		// The client reads again: the buffer drains and pushes work.
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
		waitFor(t, 30*time.Second, "a push to succeed again", func() bool {
			resp, _ := s.post("/push?conn="+welcome.Conn, "hello again")
			return resp.StatusCode == 200
		})
		waitFor(t, 5*time.Second, "the send buffer to drain", func() bool {
			ev := bufferEvents(s.log(), welcome.Conn)
			return len(ev) > 0 && ev[len(ev)-1] == "drained"
		})
		checkAlternating(t, bufferEvents(s.log(), welcome.Conn))
		c.Close()
		<-done
	})
}

// kernelSocketMax is the most a loopback TCP connection's socket buffers
// can hold one way: the sender's tcp_wmem maximum plus the receiver's
// tcp_rmem maximum (autotuning grows each up to it).
func kernelSocketMax(t *testing.T) int {
	t.Helper()
	total := 0
	for _, name := range []string{"tcp_rmem", "tcp_wmem"} {
		b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
		if err != nil {
			t.Fatalf("the socket buffer sizes: %v", err)
		}
		f := strings.Fields(string(b))
		if len(f) != 3 {
			t.Fatalf("%s: %q", name, b)
		}
		n, err := strconv.Atoi(f[2])
		if err != nil {
			t.Fatalf("%s: %q: %v", name, b, err)
		}
		total += n
	}
	return total
}

// bufferEvents lists, in order, the demo's "send buffer full" and "send
// buffer drained" log lines for conn, as "full" and "drained".
func bufferEvents(log, conn string) []string {
	var ev []string
	for _, line := range strings.Split(log, "\n") {
		switch {
		case !strings.Contains(line, conn):
		case strings.Contains(line, "send buffer full"):
			ev = append(ev, "full")
		case strings.Contains(line, "send buffer drained"):
			ev = append(ev, "drained")
		}
	}
	return ev
}

// checkAlternating fails unless ev is full, drained, full, ...: each
// filling is reported once, and a drain only follows a filling.
func checkAlternating(t *testing.T, ev []string) {
	t.Helper()
	for i, e := range ev {
		if want := [2]string{"full", "drained"}[i%2]; e != want {
			t.Fatalf("send buffer events %v: event %d is %q, want %q", ev, i, e, want)
		}
	}
	t.Logf("send buffer events: %v", ev)
}

// --- 5. --max-conn --------------------------------------------------------------

// TestHardenMaxConn: beyond --max-conn (per process: with one worker, per
// server in both modes) new HTTP gets 503 and new WebSockets close 1013,
// while the connections already open are unaffected.
func TestHardenMaxConn(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1, "--max-conn", "3")
		s.closeIdleClients(t)
		conns := []*websocket.Conn{s.dial(s.wsAddr, "/echo"), s.dial(s.wsAddr, "/echo"), s.dial(s.httpAddr, "/echo")}
		for i, c := range conns {
			echoOK(t, c, "hi "+strconv.Itoa(i))
		}

		fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := fresh.Get("http://" + s.httpAddr + "/hello")
		if err != nil {
			t.Fatalf("GET over the limit: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.Contains(string(b), "too many connections") {
			t.Fatalf("GET over the limit: got %d %q, want 503 too many connections", resp.StatusCode, b)
		}
		over, err := s.dialErr(s.wsAddr, "/echo")
		if err != nil {
			t.Fatalf("WebSocket over the limit: want an upgrade then close 1013, got %v", err)
		}
		expectCloseCode(t, over, websocket.CloseTryAgainLater, 5*time.Second)
		over.Close()
		s.expectLogged(t, 2, "too many connections")

		for i, c := range conns {
			echoOK(t, c, "still here "+strconv.Itoa(i))
		}
		// A slot freed is a slot usable again.
		conns[0].Close()
		waitFor(t, 10*time.Second, "a connection to be accepted again", func() bool {
			c, err := s.dialErr(s.wsAddr, "/echo")
			if err != nil {
				return false
			}
			defer c.Close()
			c.WriteMessage(websocket.TextMessage, []byte("back"))
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, b, err := c.ReadMessage()
			return err == nil && string(b) == "back"
		})
	})
}

// --- 6. Crashes -------------------------------------------------------------------

// TestHardenPanics: a panic in a user callback closes only its connection
// (1011 for WebSocket, 500 for HTTP), is logged with its stack, and the
// worker goes on (same pid, no restart).
func TestHardenPanics(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1)
		before := s.workerPids()
		bystander := s.dial(s.wsAddr, "/echo")
		echoOK(t, bystander, "before")

		victim := s.dial(s.wsAddr, "/echo")
		echoOK(t, victim, "about to panic")
		if err := victim.WriteMessage(websocket.TextMessage, []byte(panicMessage)); err != nil {
			t.Fatal(err)
		}
		expectCloseCode(t, victim, websocket.CloseInternalServerErr, 5*time.Second)
		s.expectLogged(t, 1, "deliberate panic in OnMessage")
		if !strings.Contains(s.log(), "goroutine") {
			t.Fatal("the panic was logged without its stack")
		}

		resp, body := s.get("/panic")
		if resp.StatusCode != 500 {
			t.Fatalf("GET /panic: got %d %q, want 500", resp.StatusCode, body)
		}
		s.expectLogged(t, 1, "deliberate panic in an HTTP handler")
		if got := s.countLog("panic", "goroutine"); got < 2 {
			t.Fatalf("log lines with a panic and its stack: got %d, want 2", got)
		}

		echoOK(t, bystander, "after")
		if resp, body := s.get("/hello"); resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("GET /hello after the panics: got %d %q", resp.StatusCode, body)
		}
		st := s.status()
		if after := s.workerPids(); after[0] != before[0] || st.Workers[0].Restarts != 0 {
			t.Fatalf("worker restarted after a recovered panic: pid %d -> %d, restarts %d", before[0], after[0], st.Workers[0].Restarts)
		}
	})
}

// TestHardenBaseWorkerKilled: in BASE mode a worker SIGKILLed costs only its
// own connections; the other worker's stay open, and it is replaced.
func TestHardenBaseWorkerKilled(t *testing.T) {
	s := startHardened(t, "base", 2)
	pids := s.workerPids()
	byWorker := map[int][]*websocket.Conn{}
	for i := 0; i < 60 && (len(byWorker[0]) == 0 || len(byWorker[1]) == 0); i++ {
		c := s.dial(s.wsAddr, fmt.Sprintf("/chat?room=k%d&name=n%d", i, i))
		w := readJSON(t, c, 5*time.Second)
		readJSON(t, c, 5*time.Second) // its own join
		byWorker[w.Worker] = append(byWorker[w.Worker], c)
	}
	if len(byWorker[0]) == 0 || len(byWorker[1]) == 0 {
		t.Fatalf("could not get connections on both workers: %d and %d", len(byWorker[0]), len(byWorker[1]))
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, c := range byWorker[0] {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.ReadMessage(); err == nil {
			t.Fatal("a connection of the killed worker is still open")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a connection of the killed worker is still open after 10s")
		}
	}
	for i, c := range byWorker[1] {
		text := "survivor " + strconv.Itoa(i)
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
			t.Fatalf("connection of the other worker: %v", err)
		}
		if m := readJSON(t, c, 5*time.Second); m.Type != "message" || m.Text != text {
			t.Fatalf("connection of the other worker: got %+v, want its message back", m)
		}
	}
	waitFor(t, 20*time.Second, "worker 0 to be replaced", func() bool {
		now := s.workerPids()
		return now[0] != 0 && now[0] != pids[0] && now[1] == pids[1]
	})
	s.expectLogged(t, 1, "worker exited unexpectedly")
	for i := 0; i < 20; i++ {
		if resp, body := s.get("/hello"); resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("GET /hello after the replacement: got %d %q", resp.StatusCode, body)
		}
	}
}

// TestHardenMasterKilled: workers never outlive their master, even one
// killed with SIGKILL.
func TestHardenMasterKilled(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 2, "--task-workers", "1")
		st := s.status()
		c := s.dial(s.wsAddr, "/echo")
		echoOK(t, c, "hi")
		if err := syscall.Kill(st.MasterPid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for _, w := range append(st.Workers, st.TaskWorkers...) {
			if !waitPidGone(w.Pid, 5*time.Second) {
				t.Fatalf("worker %d (pid %d) outlived its master by 5s", w.ID, w.Pid)
			}
		}
		<-s.Exited // reaped: the cleanup has no master to stop
	})
}

// --- 7. The control socket ---------------------------------------------------------

// TestHardenControlSocket: the control socket is mode 0600, an oversized
// request gets a clear error and does not hurt the master, and the pid file
// and socket a SIGKILLed master leaves behind do not block the next start.
func TestHardenControlSocket(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1)
		sock := filepath.Join(s.RunDir, master.SocketName)
		fi, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Fatalf("control socket: got mode %v, want a socket with 0600", fi.Mode())
		}
		pid := s.status().MasterPid

		ask := func(req []byte) master.Response {
			t.Helper()
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go c.Write(req)
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			var resp master.Response
			if err := json.NewDecoder(c).Decode(&resp); err != nil {
				t.Fatalf("control answer to a %d byte request: %v", len(req), err)
			}
			return resp
		}
		if resp := ask(bytes.Repeat([]byte("x"), 100<<10)); !strings.Contains(resp.Error, "64 KiB") {
			t.Fatalf("oversized control request: got %+v, want an error naming the 64 KiB limit", resp)
		}
		// Under the limit is fine, however long.
		padded := []byte(`{"cmd":"status","pad":"` + strings.Repeat("p", 60<<10) + "\"}\n")
		if resp := ask(padded); resp.Error != "" || resp.Status == nil || resp.Status.MasterPid != pid {
			t.Fatalf("60 KiB control request: got error %q, status %v", resp.Error, resp.Status != nil)
		}
		if st := s.status(); st.MasterPid != pid || len(st.Workers) != 1 {
			t.Fatalf("master after an oversized request: %+v", st)
		}

		// A master killed with SIGKILL leaves its pid file and socket.
		st := s.status()
		syscall.Kill(pid, syscall.SIGKILL)
		select {
		case <-s.Exited:
		case <-time.After(10 * time.Second):
			t.Fatal("master still running 10s after SIGKILL")
		}
		for _, w := range st.Workers {
			if !waitPidGone(w.Pid, 5*time.Second) {
				t.Fatalf("worker pid %d outlived the master", w.Pid)
			}
		}
		for _, name := range []string{master.PidName, master.SocketName} {
			if _, err := os.Stat(filepath.Join(s.RunDir, name)); err != nil {
				t.Fatalf("want the stale %s left behind: %v", name, err)
			}
		}
		if out, err := s.run("status"); err == nil || !strings.Contains(out, "not running") || strings.Contains(out, "goroutine") {
			t.Fatalf("status with a stale pid file: got %v %q, want one line saying it is not running", err, out)
		}
		// The next start in the same run dir is not blocked by them.
		out, err := s.run("start", "-d", "--mode", mode, "--workers", "1", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--log-format", "console")
		if err != nil {
			t.Fatalf("start over a stale pid file: %v\n%s", err, out)
		}
		t.Cleanup(func() {
			if out, err := s.run("stop"); err != nil {
				t.Errorf("stop the second master: %v\n%s", err, out)
			}
		})
		st2 := s.status() // records its pids: the cleanup checks they are gone
		if st2.MasterPid == pid || len(st2.Workers) != 1 {
			t.Fatalf("second master: %+v", st2)
		}
		resp, err := httpClient.Get("http://" + testharness.Addrs(st2)["http"] + "/hello")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("second master: GET /hello: %d", resp.StatusCode)
		}
	})
}
