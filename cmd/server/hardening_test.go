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
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
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
