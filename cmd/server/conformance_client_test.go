package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// The conformance suite's client: raw TCP, every frame built byte by byte
// here (not by a WebSocket library, which would refuse to send most of
// what the suite sends), so each case controls exactly what goes on the
// wire and in which writes.

// WebSocket opcodes, as on the wire.
const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// closeDeadline is how soon after the closing handshake the server must
// have closed the TCP connection (RFC 6455 7.1.1: at once). The server
// does it within a millisecond or two; the bound is far below the 2 s a
// lingering close would take (reactor/linger.go), with room for a -race
// build on a loaded 2-CPU machine (100 ms was exceeded once there).
const closeDeadline = 300 * time.Millisecond

// cfFrame is one frame as the client sends it.
type cfFrame struct {
	fin     bool
	rsv     byte // the three RSV bits, in place (0x70)
	op      byte
	payload []byte
	unmask  bool // send it unmasked: a protocol violation
}

// bytes encodes f: header, extended length, masking key, masked payload.
func (f cfFrame) bytes() []byte {
	b0 := f.rsv&0x70 | f.op&0x0f
	if f.fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	var mbit byte = 0x80
	if f.unmask {
		mbit = 0
	}
	switch n := len(f.payload); {
	case n <= 125:
		out = append(out, mbit|byte(n))
	case n <= 0xffff:
		out = binary.BigEndian.AppendUint16(append(out, mbit|126), uint16(n))
	default:
		out = binary.BigEndian.AppendUint64(append(out, mbit|127), uint64(n))
	}
	if f.unmask {
		return append(out, f.payload...)
	}
	var key [4]byte
	rand.Read(key[:])
	out = append(out, key[:]...)
	for i, c := range f.payload {
		out = append(out, c^key[i&3])
	}
	return out
}

// frames concatenates encoded frames (sent in one write by send).
func frames(fs ...cfFrame) []byte {
	var out []byte
	for _, f := range fs {
		out = append(out, f.bytes()...)
	}
	return out
}

func text(s string) cfFrame       { return cfFrame{fin: true, op: opText, payload: []byte(s)} }
func binFrame(b []byte) cfFrame   { return cfFrame{fin: true, op: opBinary, payload: b} }
func ping(s string) cfFrame       { return cfFrame{fin: true, op: opPing, payload: []byte(s)} }
func closeFrame(p []byte) cfFrame { return cfFrame{fin: true, op: opClose, payload: p} }
func closeCode(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// cfClient is one raw WebSocket connection to /echo.
type cfClient struct {
	t  testing.TB
	c  net.Conn // TCP, or TLS over it
	br *bufio.Reader
}

// cfDial upgrades a new connection to addr's /echo, checking the 101 and
// its Sec-WebSocket-Accept.
func cfDial(t testing.TB, addr string) *cfClient { return cfDialTLS(t, addr, nil) }

// cfDialTLS is cfDial over TLS with config tc (nil: plain TCP).
func cfDialTLS(t testing.TB, addr string, tc *tls.Config) *cfClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := nc
	if tc != nil {
		tl := tls.Client(nc, tc)
		tl.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tl.Handshake(); err != nil {
			nc.Close()
			t.Fatalf("TLS handshake with %s: %v", addr, err)
		}
		tl.SetDeadline(time.Time{})
		c = tl
	}
	t.Cleanup(func() { c.Close() })
	key := make([]byte, 16)
	rand.Read(key)
	k := base64.StdEncoding.EncodeToString(key)
	fmt.Fprintf(c, "GET /echo HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", addr, k)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: got HTTP %d, want 101", resp.StatusCode)
	}
	sum := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
		t.Fatalf("Sec-WebSocket-Accept: got %q, want %q", got, want)
	}
	return &cfClient{t: t, c: c, br: br}
}

// send writes b in one write.
func (c *cfClient) send(b []byte) {
	c.t.Helper()
	c.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// sendChunks writes b in writes of n bytes, pausing between them so that
// each arrives on its own.
func (c *cfClient) sendChunks(b []byte, n int, pause time.Duration) {
	c.t.Helper()
	for len(b) > 0 {
		k := min(n, len(b))
		c.send(b[:k])
		b = b[k:]
		if pause > 0 {
			time.Sleep(pause)
		}
	}
}

// serverFrame is one frame as the server sent it.
type serverFrame struct {
	fin     bool
	op      byte
	payload []byte
}

// read reads one whole server frame, checking what a server must do
// (RFC 6455 5.1, 5.2: never mask, no RSV bits without an extension).
func (c *cfClient) read(limit time.Duration) (serverFrame, error) {
	c.c.SetReadDeadline(time.Now().Add(limit))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return serverFrame{}, err
	}
	if h[0]&0x70 != 0 {
		return serverFrame{}, fmt.Errorf("server frame with RSV bits %#x", h[0]&0x70)
	}
	if h[1]&0x80 != 0 {
		return serverFrame{}, errors.New("server sent a masked frame")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return serverFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return serverFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 64<<20 {
		return serverFrame{}, fmt.Errorf("server frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return serverFrame{}, err
	}
	return serverFrame{fin: h[0]&0x80 != 0, op: h[0] & 0x0f, payload: p}, nil
}

// message reads one whole server message (reassembling fragments) or
// control frame.
func (c *cfClient) message() (byte, []byte) {
	c.t.Helper()
	var op byte
	var msg []byte
	for {
		f, err := c.read(10 * time.Second)
		if err != nil {
			c.t.Fatalf("reading a message: %v", err)
		}
		if f.op >= opClose {
			if op != 0 && f.op == opClose {
				c.t.Fatalf("close inside a fragmented message")
			}
			if op == 0 {
				return f.op, f.payload
			}
			continue
		}
		if op == 0 {
			op = f.op
		}
		msg = append(msg, f.payload...)
		if f.fin {
			return op, msg
		}
	}
}

// expect reads the next message or control frame and checks it.
func (c *cfClient) expect(op byte, payload []byte) {
	c.t.Helper()
	gotOp, got := c.message()
	if gotOp != op {
		c.t.Fatalf("got opcode %d (%q), want %d", gotOp, trimQ(got), op)
	}
	if !bytes.Equal(got, payload) {
		c.t.Fatalf("opcode %d: got %d bytes %q, want %d bytes %q", op, len(got), trimQ(got), len(payload), trimQ(payload))
	}
}

func trimQ(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

// expectClose checks that the next frame is the server's close with code
// (-1: no code) and that the server ends the TCP connection within
// closeDeadline of it: a clean EOF, no reset, nothing more. The client
// then answers the close (the server drains it) and closes.
func (c *cfClient) expectClose(code int) {
	c.t.Helper()
	f, err := c.read(10 * time.Second)
	if err != nil {
		c.t.Fatalf("want close %d, got %v", code, err)
	}
	got := time.Now()
	if f.op != opClose {
		c.t.Fatalf("want close %d, got a frame with opcode %d (%q): the server processed a frame it should not have", code, f.op, trimQ(f.payload))
	}
	c.checkClosePayload(f.payload, code)
	c.expectEOF(got)
	c.c.Write(closeFrame(f.payload[:min(2, len(f.payload))]).bytes())
}

func (c *cfClient) checkClosePayload(p []byte, code int) {
	c.t.Helper()
	switch {
	case code < 0 && len(p) != 0:
		c.t.Fatalf("close payload %q, want none", p)
	case code < 0:
	case len(p) < 2:
		c.t.Fatalf("close frame with %d payload bytes, want code %d", len(p), code)
	default:
		if gotCode := int(binary.BigEndian.Uint16(p)); gotCode != code {
			c.t.Fatalf("close code: got %d (%q), want %d", gotCode, p[2:], code)
		}
	}
}

// expectEOF checks a clean end of the connection within closeDeadline
// of since.
func (c *cfClient) expectEOF(since time.Time) {
	c.t.Helper()
	c.c.SetReadDeadline(since.Add(closeDeadline))
	var one [1]byte
	n, err := c.br.Read(one[:])
	switch {
	case n > 0:
		c.t.Fatalf("data after the server's close frame: %#x", one[0])
	case errors.Is(err, io.EOF):
	case isTimeout(err):
		c.t.Fatalf("TCP connection still open %s after the closing handshake", closeDeadline)
	default:
		c.t.Fatalf("connection ended with %v, want a clean EOF", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// closeHandshake sends a close with payload p and expects the server's
// reply with code (-1: none), then the end of the connection.
func (c *cfClient) closeHandshake(p []byte, code int) {
	c.t.Helper()
	c.send(closeFrame(p).bytes())
	f, err := c.read(10 * time.Second)
	if err != nil {
		c.t.Fatalf("want a close reply %d, got %v", code, err)
	}
	got := time.Now()
	if f.op != opClose {
		c.t.Fatalf("want a close reply %d, got opcode %d (%q)", code, f.op, trimQ(f.payload))
	}
	c.checkClosePayload(f.payload, code)
	c.expectEOF(got)
}
