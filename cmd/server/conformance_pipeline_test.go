package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestConformancePipelinedBareLF: a request whose header block ends in
// bare LFs gets 400 at once (RFC 9112 2.2) also when it is pipelined
// behind others, in the same write or split over two: every request
// before it is answered first, then 400 with Connection: close and a
// clean end. Before, it waited for the read timeout (408 after 15 s).
// Pipelined requests without bare LFs, a body with bare LFs among them,
// are all answered as before.
func TestConformancePipelinedBareLF(t *testing.T) {
	const (
		get  = "GET /hello HTTP/1.1\r\nHost: forkd\r\n\r\n"
		head = "HEAD /hello HTTP/1.1\r\nHost: forkd\r\n\r\n"
		bare = "GET /hello HTTP/1.1\nHost: forkd\n\n"
		post = "POST /hello HTTP/1.1\r\nHost: forkd\r\nContent-Length: 8\r\n\r\nbody\n\n\n\n"
	)
	cases := []struct {
		name   string
		writes []string
		want   []string // the answers in order: "METHOD status"
	}{
		{"get_then_bare", []string{get + bare}, []string{"GET 200", "GET 400"}},
		{"two_gets_then_bare", []string{get + get + bare}, []string{"GET 200", "GET 200", "GET 400"}},
		{"head_then_bare", []string{head + bare}, []string{"HEAD 200", "GET 400"}},
		{"bare_split_over_two_writes", []string{get + bare[:20], bare[20:]}, []string{"GET 200", "GET 400"}},
		{"bare_after_a_read_of_its_own", []string{get + get[:10], get[10:] + bare}, []string{"GET 200", "GET 200", "GET 400"}},
		{"no_bare_pipelined", []string{get + head + get}, []string{"GET 200", "HEAD 200", "GET 200"}},
		{"post_body_with_bare_LFs_then_get", []string{post + get}, []string{"POST 200", "GET 200"}},
		{"get_then_post_body_with_bare_LFs", []string{get + post + get}, []string{"GET 200", "POST 200", "GET 200"}},
	}
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 2)
		for _, tc := range cases { // the WebSocket port answers plain requests 426
			t.Run(tc.name, func(t *testing.T) {
				for round := 0; round < 5; round++ { // a read's cut falls where it may
					pipelined(t, s.httpAddr, tc.writes, tc.want)
				}
			})
		}
	})
}

// pipelined writes each of writes (20 ms apart) on one connection, reads
// the answers, wants their statuses in order within 3 s, and, when the
// last is 400, Connection: close and a clean end after it.
func pipelined(t *testing.T, addr string, writes []string, want []string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetDeadline(start.Add(10 * time.Second))
	for i, w := range writes {
		if i > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := io.WriteString(c, w); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	br := bufio.NewReader(c)
	for i, w := range want {
		method, code, _ := strings.Cut(w, " ")
		status, _ := strconv.Atoi(code)
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("answer %d of %v: %v (after %s)", i+1, want, err, time.Since(start))
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != status {
			t.Fatalf("answer %d: got %d, want %v in order", i+1, resp.StatusCode, want)
		}
		if status == 400 && !resp.Close {
			t.Fatal("400 without Connection: close")
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("answered after %s, want at once", took)
	}
	if strings.HasSuffix(want[len(want)-1], " 400") {
		expectCleanEOF(t, &bufConn{Conn: c, br: br}, 5*time.Second)
	}
}
