package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Found by trying the server as a hostile client would (session 6).

// TestConformanceBadRequestLogsNoContent: a refused request is logged
// once, without the bytes it carried: a client's Authorization header or
// cookie in a malformed (400), oversized (431) or too slow (408) request
// never reaches the log. fasthttp appends the request's buffer to its
// parse errors unless told not to.
func TestConformanceBadRequestLogsNoContent(t *testing.T) {
	const secret = "s3cret-token-in-a-bad-request"
	auth := "Authorization: Bearer " + secret + "\r\nCookie: sid=" + secret + "\r\n"
	cases := []struct {
		name   string
		req    string
		status int
	}{
		{"malformed_header", "GET /push HTTP/1.1\r\nHost: forkd\r\n" + auth + "X\x00Y: 1\r\n\r\n", 400},
		{"bad_chunk_size", "POST /push HTTP/1.1\r\nHost: forkd\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n", 400},
		{"bare_LF", "GET /push HTTP/1.1\nHost: forkd\n" + strings.ReplaceAll(auth, "\r\n", "\n") + "\n", 400},
		{"header_block_too_large", "GET /push HTTP/1.1\r\nHost: forkd\r\n" + auth + "X-Pad: " + strings.Repeat("p", 64<<10) + "\r\n\r\n", 431},
	}
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1, "--read-timeout", "1s")
		for _, tc := range cases {
			resp, body, _ := httpExchange(t, s.httpAddr, []byte(tc.req))
			if resp.StatusCode != tc.status {
				t.Fatalf("%s: got %d %q, want %d", tc.name, resp.StatusCode, body, tc.status)
			}
		}
		// Slowloris: the header block never ends, 408 after the read timeout.
		resp, body, _ := httpExchange(t, s.httpAddr, []byte("GET /push HTTP/1.1\r\nHost: forkd\r\n"+auth))
		if resp.StatusCode != 408 {
			t.Fatalf("unfinished header block: got %d %q, want 408", resp.StatusCode, body)
		}
		want := len(cases) + 1
		waitFor(t, 5*time.Second, "every refusal logged", func() bool {
			return strings.Count(s.log(), "bad request") >= want
		})
		time.Sleep(200 * time.Millisecond) // a second line per refusal would show by now
		log := s.log()
		if n := strings.Count(log, "bad request"); n != want {
			t.Errorf("%d \"bad request\" lines for %d refused requests, want one each", n, want)
		}
		if strings.Contains(log, secret) {
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, secret) {
					t.Errorf("the log holds what the client sent: %s", l)
				}
			}
		}
	})
}

// TestConformanceWSDuplicateHandshakeFields: Sec-WebSocket-Key and
// Sec-WebSocket-Version must not appear more than once in an opening
// handshake (RFC 6455 11.3.1, 11.3.5); one that repeats either is refused
// with 400, not answered 101 for whichever copy a parser keeps. Both
// modes, both ports.
func TestConformanceWSDuplicateHandshakeFields(t *testing.T) {
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	base := "GET /echo HTTP/1.1\r\nHost: forkd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	cases := []struct{ name, fields string }{
		{"key_twice", "Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n"},
		{"key_twice_same", "Sec-WebSocket-Key: " + key + "\r\nsec-websocket-key: " + key + "\r\nSec-WebSocket-Version: 13\r\n"},
		{"version_twice", "Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 8\r\n"},
	}
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1)
		cfPorts(t, s, func(t *testing.T, addr string) {
			for _, tc := range cases {
				resp, body, _ := httpExchange(t, addr, []byte(base+tc.fields+"\r\n"))
				if resp.StatusCode != 400 {
					t.Errorf("%s: got %d %q, want 400", tc.name, resp.StatusCode, body)
				}
			}
			// The same handshake with each field once is accepted.
			resp, body, _ := httpExchange(t, addr, []byte(base+"Sec-WebSocket-Key: "+key+"\r\nSec-WebSocket-Version: 13\r\n\r\n"))
			if resp.StatusCode != 101 {
				t.Fatalf("valid handshake: got %d %q, want 101", resp.StatusCode, body)
			}
		})
	})
}

// TestConformanceHalfCloseAfterLastRequest: a client that sends its last
// request (or WebSocket message) and then half-closes (shutdown(SHUT_WR),
// as `nc -N` and many scripted clients do) gets every answer and then the
// end of the connection at once: not after --idle-timeout (HTTP), not
// never (a WebSocket without --heartbeat-idle). The wait for a
// connection's next request or message watches the poller's edge, and a
// FIN that arrived before the read that took the last bytes raised no
// edge of its own. The last request or message goes out right before the
// FIN, so that the FIN is often queued behind it (on the old code the
// first round hung in every mode and port); both modes, both ports.
func TestConformanceHalfCloseAfterLastRequest(t *testing.T) {
	const rounds, wsRounds = 10, 5
	const prompt = 3 * time.Second // far below --idle-timeout
	get := []byte("GET /hello HTTP/1.1\r\nHost: forkd\r\n\r\n")
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1, "--idle-timeout", "1m")
		t.Run("http", func(t *testing.T) {
			for i := range rounds {
				nc, err := net.DialTimeout("tcp", s.httpAddr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				nc.Write(get)
				time.Sleep(time.Duration(i%4) * 5 * time.Millisecond)
				nc.Write(get)
				nc.(*net.TCPConn).CloseWrite()
				br := bufio.NewReader(nc)
				for k := range 2 {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("round %d: answer %d: %v", i, k+1, err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				start := time.Now()
				nc.SetReadDeadline(start.Add(prompt))
				if n, err := br.Read(make([]byte, 1)); n > 0 || !errors.Is(err, io.EOF) {
					t.Fatalf("round %d: after both answers to a half-closed client: %d bytes, %v after %s; want EOF at once",
						i, n, err, time.Since(start).Round(time.Millisecond))
				}
				nc.Close()
			}
		})
		cfPorts(t, s, func(t *testing.T, addr string) {
			for i := range wsRounds {
				c := cfDial(t, addr)
				c.send(text("one").bytes())
				c.expect(opText, []byte("one"))
				c.send(text("two").bytes())
				c.c.(*net.TCPConn).CloseWrite()
				// The echo of "two" comes before the end, in both modes
				// (docs/limits.md; halfclose_test.go tests it in a loop).
				start := time.Now()
				f, err := c.read(prompt)
				if err != nil || f.op != opText || string(f.payload) != "two" {
					t.Fatalf("round %d: a half-closed client: %v %q %v after %s; want the echo of \"two\"",
						i, f.op, f.payload, err, time.Since(start).Round(time.Millisecond))
				}
				if f, err = c.read(prompt); !errors.Is(err, io.EOF) {
					t.Fatalf("round %d: a half-closed client: %v %q %v after %s; want EOF at once",
						i, f.op, f.payload, err, time.Since(start).Round(time.Millisecond))
				}
				c.c.Close()
			}
		})
	})
}
