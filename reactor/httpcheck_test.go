package reactor

import (
	"testing"
)

func TestFramingHeaders(t *testing.T) {
	tests := []struct {
		raw    string
		te, cl bool
	}{
		{raw: "Host: x\r\n\r\n"},
		{raw: "Host: x\r\nContent-Length: 5\r\n\r\n", cl: true},
		{raw: "Host: x\r\nTransfer-Encoding: chunked\r\n\r\n", te: true},
		{raw: "TRANSFER-ENCODING: chunked\r\ncontent-length: 3\r\n\r\n", te: true, cl: true},
		{raw: "Transfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\n", te: true, cl: true},
		{raw: "X-Transfer-Encoding: chunked\r\nX: Content-Length: 3\r\n\r\n"},
		{raw: "Transfer-Encodings: chunked\r\n\r\n"},
		{raw: "Content-Lengthy: 3\r\n\r\n"},
		{raw: "Host: x\nTransfer-Encoding: identity\n\n", te: true},
	}
	for _, tt := range tests {
		te, cl := framingHeaders([]byte(tt.raw))
		if te != tt.te || cl != tt.cl {
			t.Errorf("%q: got te=%v cl=%v, want te=%v cl=%v", tt.raw, te, cl, tt.te, tt.cl)
		}
	}
}

// TestHdrScan: a block ended by bare LFs is flagged once complete; one
// ended by CRLFCRLF is not, even with bare LFs before; the scan stops at
// the end of a block whose request may have a body (a body with bare LFs
// is not looked at), and goes on into the next request after a GET or
// HEAD without framing fields, however the bytes are split.
func TestHdrScan(t *testing.T) {
	tests := []struct {
		in                 string
		done, bare, follow bool
	}{
		{in: "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n", done: true},
		{in: "GET / HTTP/1.1\nHost: x\n\n", done: true, bare: true},
		{in: "GET / HTTP/1.1\r\nHost: x\r\n\n", done: true, bare: true},
		{in: "GET / HTTP/1.1\r\nHost: x\n\r\n", done: true, bare: true},
		{in: "POST / HTTP/1.1\r\nHost: x\nContent-Length: 2\r\n\r\n", done: true},
		{in: "\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nbody\n\n", done: true},
		{in: "GET / HTTP/1.1\r\ncontent-LENGTH: 4\r\n\r\nbody\n\n", done: true},
		{in: "GET / HTTP/1.1\r\nHost: x\r\n", done: false},
		{in: "GET / HTTP/1.1\r\nHost: x\r\n\r", done: false},
		// Bodiless: the scan follows into the next request.
		{in: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", follow: true},
		{in: "head / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\n", follow: true},
		{in: "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\nHost: x\n\n", follow: true, done: true, bare: true},
		{in: "GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\n", follow: true, done: true, bare: true},
		{in: "GET / HTTP/1.1\r\nHost: x\r\n\r\nbody\n\n", follow: true, done: true, bare: true}, // no length: no body
		{in: "GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody\n\n", follow: true, done: true},
		{in: "GETX / HTTP/1.1\r\n\r\nGET / HTTP/1.1\n\n", done: true},
	}
	for _, tt := range tests {
		for cut := 0; cut <= len(tt.in); cut++ {
			var s hdrScan
			s.reset(hdrScanning)
			s.scan([]byte(tt.in[:cut]))
			s.scan([]byte(tt.in[cut:]))
			if s.done != tt.done || s.follow != tt.follow || (s.done && s.bare != tt.bare) {
				t.Fatalf("%q split at %d: got done=%v bare=%v follow=%v, want done=%v bare=%v follow=%v",
					tt.in, cut, s.done, s.bare, s.follow, tt.done, tt.bare, tt.follow)
			}
			if err := s.before(); (err != nil) != (tt.done && tt.bare) {
				t.Fatalf("%q: before the next read got %v", tt.in, err)
			}
		}
	}
	// Already buffered when the request started: not scanned at all.
	var s hdrScan
	s.reset(hdrWaitPeek)
	s.active()
	if s.state != hdrOff {
		t.Fatalf("a request whose first byte was buffered is scanned (state %d)", s.state)
	}
	// Pipelined behind a bodiless request: the scan saw it, and a bare
	// block there fails the read fasthttp makes for it, after the first
	// request was served (idle, then active, as fasthttp goes).
	s.reset(hdrScanning)
	s.scan([]byte("GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\n\n"))
	for i := 0; i < 2; i++ {
		s.idle()
		s.active()
		if s.state != hdrScanning {
			t.Fatalf("after request %d: state %d, want scanning", i+1, s.state)
		}
	}
	if err := s.before(); err != errBareLF {
		t.Fatalf("the read for the bare request: got %v, want errBareLF", err)
	}
	// The scan stopped at a block with a body ahead: not followed past
	// the request served (which one that was is not known).
	s.reset(hdrScanning)
	s.scan([]byte("GET /1 HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"))
	s.idle()
	s.active()
	if s.state != hdrOff {
		t.Fatalf("after the GET, a POST with a body ahead: state %d, want off", s.state)
	}
}

func TestFieldTwice(t *testing.T) {
	tests := []struct {
		raw   string
		twice bool
	}{
		{raw: "Host: x\r\nSec-WebSocket-Key: a\r\n\r\n"},
		{raw: "Sec-WebSocket-Key: a\r\nsec-websocket-key: a\r\n\r\n", twice: true},
		{raw: "SEC-WEBSOCKET-KEY: a\r\nHost: x\r\nSec-WebSocket-Key: b\r\n\r\n", twice: true},
		{raw: "Sec-WebSocket-Key: a\r\nX-Sec-WebSocket-Key: b\r\n\r\n"},
		{raw: "Sec-WebSocket-Key: a\r\nSec-WebSocket-Keys: b\r\n\r\n"},
		{raw: "Sec-WebSocket-Key: a\r\nX: b\r\n Sec-WebSocket-Key: c\r\n\r\n"}, // folded into X
	}
	for _, tt := range tests {
		if got := fieldTwice([]byte(tt.raw), strWSKey); got != tt.twice {
			t.Errorf("%q: got %v, want %v", tt.raw, got, tt.twice)
		}
	}
}

// BenchmarkHdrScan: the header scan's cost per request, as bench's load
// sends one (session 8: 25 ns; before it followed pipelined requests, 22).
func BenchmarkHdrScan(b *testing.B) {
	req := []byte("GET /hello HTTP/1.1\r\nHost: 127.0.0.1:41903\r\nUser-Agent: forkd-bench\r\nAccept: */*\r\n\r\n")
	var s hdrScan
	for i := 0; i < b.N; i++ {
		s.reset(hdrScanning)
		s.scan(req)
	}
	if !s.follow {
		b.Fatal("the scan did not follow past a GET")
	}
}
