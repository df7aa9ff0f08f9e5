package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestConformanceExpectContinue: "Expect: 100-continue" with a
// Content-Length over --max-package-size is answered 413 at once, not
// "100 Continue" (which would invite the client to send a body that is then
// refused); a client that sends the body anyway still reads the 413 and a
// clean close (lingering close, no reset). Within the limit (HTTP port), 100 then
// 200. Both modes, both ports.
func TestConformanceExpectContinue(t *testing.T) {
	const limit = 64 << 10
	head := func(n int) []byte {
		return []byte(fmt.Sprintf("POST /hello HTTP/1.1\r\nHost: forkd\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", n))
	}
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 2, "--max-package-size", "64KiB")
		cfPorts(t, s, func(t *testing.T, addr string) {
			t.Run("over_limit_413_without_100", func(t *testing.T) {
				c, br := dialRaw(t, addr)
				if _, err := c.Write(head(limit + 1)); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("reading the answer: %v", err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestEntityTooLarge {
					t.Fatalf("got %d %s, want 413 without a 100 Continue first", resp.StatusCode, resp.Status)
				}
				if took := time.Since(start); took > 3*time.Second {
					t.Fatalf("answered after %s, want at once", took)
				}
				if !resp.Close {
					t.Fatal("413 without Connection: close")
				}
				// A client that does not wait (curl sends after 1 s) writes the
				// body anyway: it is drained, the close is clean.
				if _, err := c.Write(bytes.Repeat([]byte("b"), limit+1)); err != nil && !isReset(err) {
					t.Fatal(err)
				}
				expectCleanEOF(t, &bufConn{Conn: c, br: br}, 5*time.Second)
			})
			t.Run("within_limit_100_then_200", func(t *testing.T) {
				if addr == s.wsAddr {
					t.Skip("the WebSocket port answers plain requests 426")
				}
				c, br := dialRaw(t, addr)
				if _, err := c.Write(head(4)); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("reading the interim answer: %v", err)
				}
				if resp.StatusCode != http.StatusContinue {
					t.Fatalf("got %d, want 100 Continue", resp.StatusCode)
				}
				if _, err := c.Write([]byte("abcd")); err != nil {
					t.Fatal(err)
				}
				resp, err = http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("reading the answer: %v", err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(b) != "hello" {
					t.Fatalf("got %d %q, want 200 hello", resp.StatusCode, b)
				}
			})
		})
	})
}

// dialRaw dials addr for a hand-written HTTP exchange: a 10 s deadline,
// closed when the test ends.
func dialRaw(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}
