package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// HTTP framing and the WebSocket handshake, as a strict client or a
// smuggler would try them, raw over TCP, in both modes and on both ports.

// httpExchange writes req whole (as most HTTP libraries do: the body
// before reading anything), then reads one response. A reset instead of
// the answer fails the test.
func httpExchange(t *testing.T, addr string, req []byte) (*http.Response, string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(req); err != nil {
		t.Fatalf("writing the request (%d bytes): %v", len(req), err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
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

// smuggled is a request whose body, framed by chunked encoding, is
// followed by a second request (what a length-framing proxy would take
// for this request's body).
func smuggled(te string) []byte {
	return []byte("POST /hello HTTP/1.1\r\nHost: forkd\r\nContent-Length: 37\r\n" + te +
		"\r\n0\r\n\r\nGET /hello?smuggled HTTP/1.1\r\nHost: forkd\r\n\r\n")
}

func upgradeReq(key, version string) []byte {
	h := "GET /echo HTTP/1.1\r\nHost: forkd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	if key != "" {
		h += "Sec-WebSocket-Key: " + key + "\r\n"
	}
	if version != "" {
		h += "Sec-WebSocket-Version: " + version + "\r\n"
	}
	return []byte(h + "\r\n")
}

func TestConformanceHTTP(t *testing.T) {
	type httpCase struct {
		name     string
		req      []byte
		status   int
		closes   bool              // the server must close after the answer
		header   map[string]string // headers the answer must carry
		httpOnly bool              // only on the HTTP port
	}
	cases := []httpCase{
		{name: "CL_and_TE_chunked", req: smuggled("Transfer-Encoding: chunked\r\n"), status: 400, closes: true},
		{name: "CL_and_TE_CHUNKED", req: smuggled("Transfer-Encoding: CHUNKED\r\n"), status: 400, closes: true},
		{name: "CL_and_TE_spaces", req: smuggled("Transfer-Encoding:   chunked\r\n"), status: 400, closes: true},
		{name: "CL_and_TE_tab", req: smuggled("Transfer-Encoding:\tchunked\r\n"), status: 400, closes: true},
		{name: "CL_and_TE_obs_fold", req: smuggled("Transfer-Encoding:\r\n chunked\r\n"), status: 400, closes: true},
		{name: "CL_and_te_lowercase_name", req: smuggled("transfer-encoding: chunked\r\n"), status: 400, closes: true},
		{name: "TE_identity_without_CL", req: []byte("POST /hello HTTP/1.1\r\nHost: forkd\r\nTransfer-Encoding: identity\r\n\r\n" +
			"GET /hello?smuggled HTTP/1.1\r\nHost: forkd\r\n\r\n"), status: 400, closes: true},
		{name: "bare_LF_header_block", req: []byte("GET /hello HTTP/1.1\nHost: forkd\n\n"), status: 400, closes: true},
		{name: "bare_LF_last_line", req: []byte("GET /hello HTTP/1.1\r\nHost: forkd\r\n\n"), status: 400, closes: true},
		{name: "HTTP_9.9", req: []byte("GET /hello HTTP/9.9\r\nHost: forkd\r\n\r\n"), status: 505, closes: true},
		{name: "HTTP_2.0", req: []byte("GET /hello HTTP/2.0\r\nHost: forkd\r\n\r\n"), status: 505, closes: true},
		{name: "ws_key_not_base64", req: upgradeReq("this is not base64!!!!!!", "13"), status: 400},
		{name: "ws_key_short", req: upgradeReq("abc", "13"), status: 400},
		{name: "ws_key_15_bytes", req: upgradeReq("AAAAAAAAAAAAAAAAAAAA", "13"), status: 400},
		{name: "ws_key_17_bytes", req: upgradeReq("AAAAAAAAAAAAAAAAAAAAAAA=", "13"), status: 400},
		{name: "ws_key_missing", req: upgradeReq("", "13"), status: 400},
		{name: "ws_version_missing", req: upgradeReq("dGhlIHNhbXBsZSBub25jZQ==", ""), status: 426,
			header: map[string]string{"Sec-WebSocket-Version": "13"}},
		{name: "ws_version_8", req: upgradeReq("dGhlIHNhbXBsZSBub25jZQ==", "8"), status: 426,
			header: map[string]string{"Sec-WebSocket-Version": "13"}},
		{name: "body_over_limit_written_whole", req: postRaw("/hello", 3<<20), status: 413, closes: true},
		{name: "body_at_limit", req: postRaw("/hello", 1<<20), status: 200, httpOnly: true},
		{name: "header_block_over_limit_written_whole", req: getWithHeaderBlock(64 << 10), status: 431, closes: true},
	}
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 2, "--max-package-size", "1MiB")
		cfPorts(t, s, func(t *testing.T, addr string) {
			for _, tc := range cases {
				if tc.httpOnly && addr == s.wsAddr {
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					start := time.Now()
					resp, body, c := httpExchange(t, addr, tc.req)
					if resp.StatusCode != tc.status {
						t.Fatalf("got %d %q, want %d", resp.StatusCode, body, tc.status)
					}
					if took := time.Since(start); took > 3*time.Second {
						t.Fatalf("answered after %s, want at once", took)
					}
					for k, v := range tc.header {
						if got := resp.Header.Get(k); got != v {
							t.Fatalf("header %s: got %q, want %q", k, got, v)
						}
					}
					if tc.closes {
						if !resp.Close {
							t.Fatal("answer without Connection: close")
						}
						// Nothing after the answer: the smuggled request is never served.
						expectCleanEOF(t, c, 5*time.Second)
					}
				})
			}
		})
	})
}

// expectCleanEOF: the server ends the connection within limit, with no
// further bytes (no second answer) and no reset.
func expectCleanEOF(t *testing.T, c net.Conn, limit time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(limit))
	b, err := io.ReadAll(c)
	if len(b) > 0 {
		t.Fatalf("%d more bytes after the answer: %q", len(b), trimQ(b))
	}
	if err != nil {
		t.Fatalf("want a clean EOF after the answer, got %v", err)
	}
}

// TestConformanceReadTimeout: --read-timeout counts from accept for a
// connection's first request (docs/limits.md): one that sends nothing
// gets 408 after it; later requests count from their first byte.
func TestConformanceReadTimeout(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1, "--read-timeout", "1s", "--idle-timeout", "10s")
		c, err := net.Dial("tcp", s.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("silent connection: want a 408, got %v after %s", err, time.Since(start))
		}
		resp.Body.Close()
		if took := time.Since(start); resp.StatusCode != 408 || took < 700*time.Millisecond || took > 4*time.Second {
			t.Fatalf("silent connection: got %d after %s, want 408 after about 1s", resp.StatusCode, took)
		}
		// A keep-alive connection idle longer than the read timeout is not
		// cut by it: its next request's clock starts at its first byte.
		resp2, body, kc := rawHTTP(t, s.httpAddr, []byte("GET /hello HTTP/1.1\r\nHost: forkd\r\n\r\n"))
		if resp2.StatusCode != 200 || body != "hello" {
			t.Fatalf("got %d %q", resp2.StatusCode, body)
		}
		time.Sleep(1500 * time.Millisecond)
		fmt.Fprintf(kc, "GET /hello HTTP/1.1\r\nHost: forkd\r\n\r\n")
		kc.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp3, err := http.ReadResponse(kc.(*bufConn).br, nil)
		if err != nil || resp3.StatusCode != 200 {
			t.Fatalf("second request after 1.5s idle: %v %v", resp3, err)
		}
		resp3.Body.Close()
	})
}

// pythonPath is Debian's python3, which has python3-websockets
// (installed by .ci/install-deps.sh).
const pythonPath = "/usr/bin/python3"

// TestConformancePythonWebsockets: a second, independent client, Debian's
// python3-websockets, echoes text and binary messages of 0 B to 1 MiB and
// closes with each valid code, expecting the code echoed; Python's urllib
// posts a body over the limit and must read the 413. Both modes, both ports.
func TestConformancePythonWebsockets(t *testing.T) {
	if err := exec.Command(pythonPath, "-c", "import websockets").Run(); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s with websockets not found (run .ci/install-deps.sh): %v", pythonPath, err)
		}
		t.Fatalf("%s with websockets not found under CI: run .ci/install-deps.sh first (%v)", pythonPath, err)
	}
	script, err := filepath.Abs("testdata/ws_client.py")
	if err != nil {
		t.Fatal(err)
	}
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 2, "--max-package-size", "2MiB")
		cfPorts(t, s, func(t *testing.T, addr string) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, pythonPath, script, "ws://"+addr+"/echo", "http://"+s.httpAddr+"/hello", "2097152")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("python client: %v\n%s", err, out)
			}
			if !bytes.Contains(out, []byte("ALL OK")) {
				t.Fatalf("python client did not finish:\n%s", out)
			}
			if testing.Verbose() {
				t.Logf("%s", strings.TrimSpace(string(out)))
			}
		})
	})
}
