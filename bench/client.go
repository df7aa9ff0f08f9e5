package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// The load generator's clients: raw TCP, pre-encoded requests and frames, and
// just enough parsing to know a response's status and length. They allocate
// nothing per request once a connection is up.

const (
	dialTimeout = 5 * time.Second
	ioTimeout   = 10 * time.Second // a single response or frame slower than this is an error
	maxBody     = 16 << 20
)

var errBadResponse = errors.New("bench: malformed response")

// httpConn is one keep-alive HTTP/1.1 client connection.
type httpConn struct {
	c     net.Conn
	br    *bufio.Reader
	body  []byte // last response body, when asked for
	close bool   // the server said Connection: close
}

func dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	return dialTCPFrom(ctx, addr, nil)
}

// dialTCPFrom is dialTCP from a given local address (nil: the system's
// choice). WebSocket dials spread their sources (see sourceAddr); HTTP
// dials do not: the server's API answers only its allowed addresses
// (127.0.0.1 by default).
func dialTCPFrom(ctx context.Context, addr string, local net.Addr) (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout, LocalAddr: local}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return c, nil
}

func dialHTTP(ctx context.Context, addr string) (*httpConn, error) {
	c, err := dialTCP(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &httpConn{c: c, br: bufio.NewReaderSize(c, 16<<10)}, nil
}

func (h *httpConn) Close() error { return h.c.Close() }

// do writes a pre-encoded request and reads the response. When keepBody is
// set the body is left in h.body (valid until the next call).
func (h *httpConn) do(req []byte, keepBody bool) (status int, err error) {
	if _, err := h.c.Write(req); err != nil {
		return 0, err
	}
	return h.readResponse(keepBody)
}

// readResponse parses a status line, the headers it needs, and the body.
func (h *httpConn) readResponse(keepBody bool) (int, error) {
	line, err := h.br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, fmt.Errorf("%w: status line %q", errBadResponse, line)
	}
	status, ok := atoi3(line[9:12])
	if !ok {
		return 0, fmt.Errorf("%w: status line %q", errBadResponse, line)
	}
	length, chunked := -1, false
	for {
		line, err = h.br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 { // "\r\n": end of headers
			break
		}
		if v, ok := headerValue(line, "content-length"); ok {
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 0 || n > maxBody {
				return 0, fmt.Errorf("%w: content-length %q", errBadResponse, v)
			}
			length = n
		} else if v, ok := headerValue(line, "transfer-encoding"); ok {
			chunked = bytes.EqualFold(v, []byte("chunked"))
		} else if v, ok := headerValue(line, "connection"); ok {
			h.close = bytes.EqualFold(v, []byte("close"))
		}
	}
	h.body = h.body[:0]
	switch {
	case chunked:
		err = h.readChunked(keepBody)
	case length >= 0:
		err = h.readN(length, keepBody)
	default:
		return 0, fmt.Errorf("%w: no content-length", errBadResponse)
	}
	return status, err
}

func (h *httpConn) readN(n int, keep bool) error {
	if !keep {
		_, err := h.br.Discard(n)
		return err
	}
	if cap(h.body)-len(h.body) < n {
		nb := make([]byte, len(h.body), len(h.body)+n)
		copy(nb, h.body)
		h.body = nb
	}
	start := len(h.body)
	h.body = h.body[:start+n]
	_, err := io.ReadFull(h.br, h.body[start:])
	return err
}

func (h *httpConn) readChunked(keep bool) error {
	for {
		line, err := h.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseInt(string(line), 16, 32)
		if err != nil || n < 0 || len(h.body)+int(n) > maxBody {
			return fmt.Errorf("%w: chunk size %q", errBadResponse, line)
		}
		if n == 0 { // trailers, then an empty line
			for {
				line, err = h.br.ReadSlice('\n')
				if err != nil || len(line) <= 2 {
					return err
				}
			}
		}
		if err := h.readN(int(n), keep); err != nil {
			return err
		}
		if _, err := h.br.Discard(2); err != nil {
			return err
		}
	}
}

// headerValue reports whether line is header name (case-insensitive) and
// returns its trimmed value.
func headerValue(line []byte, name string) ([]byte, bool) {
	if len(line) <= len(name) || line[len(name)] != ':' || !bytes.EqualFold(line[:len(name)], []byte(name)) {
		return nil, false
	}
	return bytes.TrimSpace(line[len(name)+1:]), true
}

func atoi3(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// httpGet encodes a keep-alive GET request.
func httpGet(host, path string) []byte {
	return []byte("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: forkd-bench\r\n\r\n")
}

// httpPostHead encodes a POST request's head; the body (length n) follows.
func httpPostHead(host, path string, n int) []byte {
	return []byte("POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: forkd-bench\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(n) + "\r\n\r\n")
}

// WebSocket opcodes (RFC 6455).
const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// The handshake uses a fixed key: the server cannot tell, and the expected
// accept value is then a constant (RFC 6455's own example pair).
const (
	wsKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	wsAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// errWSClosed is returned by readMessage when the server sent a close frame.
var errWSClosed = errors.New("bench: websocket closed by server")

// wsConn is a minimal WebSocket client connection. Frames it sends carry the
// mask bit with an all-zero masking key, so a frame is its payload with a
// header in front and can be encoded once and written many times.
type wsConn struct {
	c    net.Conn
	br   *bufio.Reader
	hdr  [14]byte
	wbuf []byte
	msg  []byte // last message read, valid until the next read

	closeSent bool
}

// wsHandshake upgrades c (already connected to host) on path, reading the
// response with br (which is Reset onto c; pass nil for a new one).
func wsHandshake(c net.Conn, br *bufio.Reader, host, path string) (*wsConn, error) {
	if br == nil {
		br = bufio.NewReaderSize(c, 4<<10)
	} else {
		br.Reset(c)
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + wsKey +
		"\r\nSec-WebSocket-Version: 13\r\nUser-Agent: forkd-bench\r\n\r\n"
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c, req); err != nil {
		return nil, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return nil, fmt.Errorf("websocket handshake: %w", err)
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || string(line[9:12]) != "101" {
		return nil, fmt.Errorf("websocket handshake: %q", bytes.TrimSpace(line))
	}
	accepted := false
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return nil, fmt.Errorf("websocket handshake: %w", err)
		}
		if len(line) <= 2 {
			break
		}
		if v, ok := headerValue(line, "sec-websocket-accept"); ok {
			accepted = string(v) == wsAccept
		}
	}
	if !accepted {
		return nil, errors.New("websocket handshake: bad Sec-WebSocket-Accept")
	}
	_ = c.SetDeadline(time.Time{})
	return &wsConn{c: c, br: br}, nil
}

// dialWS connects to ws://addr/path.
func dialWS(ctx context.Context, addr, path string) (*wsConn, error) {
	c, err := dialTCPFrom(ctx, addr, sourceAddr(addr))
	if err != nil {
		return nil, err
	}
	ws, err := wsHandshake(c, nil, addr, path)
	if err != nil {
		c.Close()
		return nil, err
	}
	return ws, nil
}

func (w *wsConn) Close() error { return w.c.Close() }

// appendFrame appends a final, masked (zero key) client frame to dst.
func appendFrame(dst []byte, op byte, payload []byte) []byte {
	n := len(payload)
	dst = append(dst, 0x80|op)
	switch {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n < 1<<16:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	dst = append(dst, 0, 0, 0, 0) // masking key
	return append(dst, payload...)
}

// writeMessage sends one message.
func (w *wsConn) writeMessage(op byte, payload []byte) error {
	w.wbuf = appendFrame(w.wbuf[:0], op, payload)
	_, err := w.c.Write(w.wbuf)
	return err
}

// readMessage reads the next data message, answering pings and assembling
// fragments. The payload (w.msg) is valid until the next call.
func (w *wsConn) readMessage() (op byte, err error) {
	w.msg = w.msg[:0]
	var msgOp byte
	for {
		if _, err := io.ReadFull(w.br, w.hdr[:2]); err != nil {
			return 0, err
		}
		fin, fop := w.hdr[0]&0x80 != 0, w.hdr[0]&0x0F
		if w.hdr[1]&0x80 != 0 {
			return 0, fmt.Errorf("%w: masked server frame", errBadResponse)
		}
		n := uint64(w.hdr[1] & 0x7F)
		switch n {
		case 126:
			if _, err := io.ReadFull(w.br, w.hdr[2:4]); err != nil {
				return 0, err
			}
			n = uint64(w.hdr[2])<<8 | uint64(w.hdr[3])
		case 127:
			if _, err := io.ReadFull(w.br, w.hdr[2:10]); err != nil {
				return 0, err
			}
			n = 0
			for _, b := range w.hdr[2:10] {
				n = n<<8 | uint64(b)
			}
		}
		if n > maxBody || uint64(len(w.msg))+n > maxBody {
			return 0, fmt.Errorf("%w: frame of %d bytes", errBadResponse, n)
		}
		if fop >= opClose { // control frame, between fragments or not
			var ctl [125]byte
			if n > 125 {
				return 0, fmt.Errorf("%w: control frame of %d bytes", errBadResponse, n)
			}
			if _, err := io.ReadFull(w.br, ctl[:n]); err != nil {
				return 0, err
			}
			switch fop {
			case opClose:
				if !w.closeSent {
					w.closeSent = true
					_ = w.writeMessage(opClose, ctl[:min(n, 2)])
				}
				return opClose, errWSClosed
			case opPing:
				if err := w.writeMessage(opPong, ctl[:n]); err != nil {
					return 0, err
				}
			}
			continue
		}
		if fop != opCont {
			msgOp = fop
		}
		start := len(w.msg)
		if uint64(cap(w.msg)-start) < n {
			nb := make([]byte, start, start+int(n)+512)
			copy(nb, w.msg)
			w.msg = nb
		}
		w.msg = w.msg[:start+int(n)]
		if _, err := io.ReadFull(w.br, w.msg[start:]); err != nil {
			return 0, err
		}
		if fin {
			return msgOp, nil
		}
	}
}

// closeGracefully sends a close frame and waits (bounded) for the server's,
// then closes the socket.
func (w *wsConn) closeGracefully(timeout time.Duration) error {
	defer w.c.Close()
	w.closeSent = true
	if err := w.writeMessage(opClose, []byte{0x03, 0xE8}); err != nil { // 1000
		return err
	}
	_ = w.c.SetReadDeadline(time.Now().Add(timeout))
	for {
		if _, err := w.readMessage(); err != nil {
			if errors.Is(err, errWSClosed) || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}
