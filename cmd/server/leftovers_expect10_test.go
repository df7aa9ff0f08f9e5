package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestExpectContinueHTTP10: RFC 9110 10.1.1, a server MUST ignore a
// 100-continue expectation in an HTTP/1.0 request (its client cannot parse
// a 1xx). An HTTP/1.0 request with "Expect: 100-continue" gets no interim
// 100: its body is read and it is answered as any other (200 within the
// limit, the body consumed so that a keep-alive request after it is read
// as a request; 413 over it). HTTP/1.1 still gets 100 then 200. Raw TCP on
// loopback, both modes, both ports.
func TestExpectContinueHTTP10(t *testing.T) {
	const limit = 64 << 10
	// answer reads one response and refuses an interim 100.
	answer := func(t *testing.T, br *bufio.Reader) (int, string) {
		t.Helper()
		head, err := br.Peek(len("HTTP/1.1 100"))
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if strings.HasSuffix(string(head), " 100") {
			t.Fatalf("got %q: an interim 100 Continue to an HTTP/1.0 request (RFC 9110 10.1.1: MUST ignore the expectation)", head)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 2, "--max-package-size", "64KiB")
		cfPorts(t, s, func(t *testing.T, addr string) {
			for round := 0; round < 3; round++ {
				t.Run(fmt.Sprintf("http10_within_limit_%d", round), func(t *testing.T) {
					c, br := dialRaw(t, addr)
					// An HTTP/1.0 client sends its body at once; keep-alive, so
					// that the next request shows the body was consumed.
					req := "POST /hello HTTP/1.0\r\nHost: forkd\r\nConnection: keep-alive\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nabcd" +
						"GET /hello HTTP/1.0\r\nHost: forkd\r\n\r\n"
					if _, err := c.Write([]byte(req)); err != nil {
						t.Fatal(err)
					}
					code, body := answer(t, br)
					if addr == s.wsAddr {
						if code != http.StatusUpgradeRequired {
							t.Fatalf("WebSocket port: got %d %q, want 426", code, body)
						}
						return // and it closes
					}
					if code != http.StatusOK || body != "hello" {
						t.Fatalf("got %d %q, want 200 hello", code, body)
					}
					if code, body = answer(t, br); code != http.StatusOK || body != "hello" {
						t.Fatalf("second request: got %d %q, want 200 hello", code, body)
					}
				})
			}
			t.Run("http10_over_limit_413", func(t *testing.T) {
				c, br := dialRaw(t, addr)
				req := fmt.Sprintf("POST /hello HTTP/1.0\r\nHost: forkd\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", limit+1)
				if _, err := c.Write([]byte(req)); err != nil {
					t.Fatal(err)
				}
				if code, body := answer(t, br); code != http.StatusRequestEntityTooLarge {
					t.Fatalf("got %d %q, want 413", code, body)
				}
			})
			// HTTP/1.1 keeps its 100 Continue: TestConformanceExpect's
			// within_limit_100_then_200 (unchanged) checks it.
		})
	})
}
