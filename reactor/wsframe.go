package reactor

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"syscall"
	"unicode/utf8"
)

// WebSocket opcodes and close codes (RFC 6455 5.2, 7.4.1).
const (
	opContinuation = 0
	opText         = 1
	opBinary       = 2
	opClose        = 8
	opPing         = 9
	opPong         = 10

	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseProtocolError   = 1002
	CloseNoStatus        = 1005 // never sent: "the peer's close had no code"
	CloseAbnormal        = 1006 // never sent: "the connection ended without a close"
	CloseInvalidPayload  = 1007
	CloseMessageTooBig   = 1009
	CloseInternalError   = 1011
	CloseTryAgainLater   = 1013
	maxControlPayload    = 125
	maxFrameHeader       = 14
	frameReadBufferBytes = 4 << 10
)

// wsFail is why a connection is failed (RFC 6455 7.1.7): the close code to
// send and a short reason for it and the log.
type wsFail struct {
	code   int
	reason string
}

func (f *wsFail) Error() string { return "reactor: websocket: " + f.reason }

var (
	errRSV          = &wsFail{CloseProtocolError, "reserved bits set"}
	errOpcode       = &wsFail{CloseProtocolError, "reserved opcode"}
	errCtlFragment  = &wsFail{CloseProtocolError, "fragmented control frame"}
	errCtlTooLong   = &wsFail{CloseProtocolError, "control frame over 125 bytes"}
	errUnmasked     = &wsFail{CloseProtocolError, "unmasked client frame"}
	errLength       = &wsFail{CloseProtocolError, "frame length with the top bit set"}
	errContinuation = &wsFail{CloseProtocolError, "continuation with no message to continue"}
	errInterleaved  = &wsFail{CloseProtocolError, "new data frame inside a fragmented message"}
	errCloseShort   = &wsFail{CloseProtocolError, "close payload of one byte"}
	errCloseCode    = &wsFail{CloseProtocolError, "invalid close code"}
	errCloseUTF8    = &wsFail{CloseProtocolError, "close reason is not UTF-8"}
	errTextUTF8     = &wsFail{CloseInvalidPayload, "invalid UTF-8 in text message"}
	errTooBig       = &wsFail{CloseMessageTooBig, "message too big"}
)

// frameReader reads a client's frames (RFC 6455 5.2) and hands back whole
// data messages and single control frames. It validates as bytes arrive:
// UTF-8 of a text message is checked incrementally, across frames and
// across the reads of one frame, so a message fails as soon as its bytes
// so far cannot begin valid UTF-8; and after the first failure it reads
// nothing more. It allocates nothing per message: an unfragmented frame
// that is already in the read buffer is unmasked in place and returned as
// a slice of it; others are assembled in a pooled buffer.
type frameReader struct {
	src  io.Reader
	bp   *[]byte // pooled read buffer; nil while released (see wsread.go)
	buf  []byte
	r, w int
	max  int // largest message

	// A plain TCP WebSocket is read through its raw connection, so that
	// no buffer is held while it waits (see wsread.go): what fasthttp had
	// buffered past the upgrade request (br) first, then raw.
	br      *bufio.Reader
	raw     syscall.RawConn
	c       *Conn // counts the bytes read raw
	readFn  func(fd uintptr) bool
	rn      int
	rerr    error
	needBuf bool
	// emptied: the last read from the socket left room in the buffer, so
	// the socket held nothing more then (see peerDone), and whatever came
	// since raised an edge: the next read may wait first (see wsread.go).
	emptied bool
	// waitFn waits for the socket, then reads it (nil: a read always
	// reads first); wres is what it did; waited: the last read came from
	// it (tests).
	wres   int8
	waited bool
	waitFn func(fd uintptr)

	// The message being assembled (fragmented, or larger than what one
	// read brought): its opcode (0: none), bytes and UTF-8 state.
	msgOp int
	mp    *[]byte
	utf   utf8State
}

func newFrameReader(src io.Reader, max int) *frameReader {
	return &frameReader{src: src, max: max}
}

// take gets a read buffer from the pool.
func (fr *frameReader) take() {
	if bp, _ := rawBufPool.Get().(*[]byte); bp != nil {
		fr.bp = bp
	} else {
		b := make([]byte, frameReadBufferBytes)
		fr.bp = &b
	}
	fr.buf = (*fr.bp)[:cap(*fr.bp)]
}

// putBuf returns the read buffer to the pool.
func (fr *frameReader) putBuf() {
	if fr.bp != nil {
		rawBufPool.Put(fr.bp)
		fr.bp, fr.buf = nil, nil
	}
}

// release returns the pooled buffers; the reader is not used after it.
func (fr *frameReader) release() {
	fr.putBuf()
	fr.dropMsg()
}

func (fr *frameReader) dropMsg() {
	if fr.mp != nil {
		if cap(*fr.mp) <= 64<<10 {
			*fr.mp = (*fr.mp)[:0]
			msgPool.Put(fr.mp)
		}
		fr.mp = nil
	}
}

// fill makes at least n bytes readable in buf[r:w] (n <= len(buf)).
func (fr *frameReader) fill(n int) error {
	if fr.w-fr.r >= n {
		return nil
	}
	if fr.r == fr.w {
		fr.r, fr.w = 0, 0
		// Everything read is handled (and, for an echo, answered): the
		// peer can hardly have sent more yet. A plain TCP socket waits
		// for it on the poller (readRaw); otherwise, as for a keep-alive
		// HTTP connection on TLS, the other ready goroutines run first, so
		// the read more often finds the next message instead of EAGAIN.
		if !fr.waitsFirst() {
			yieldBeforeNextRequest()
		}
	} else if fr.r+n > len(fr.buf) {
		fr.w = copy(fr.buf, fr.buf[fr.r:fr.w])
		fr.r = 0
	}
	for fr.w-fr.r < n {
		var m int
		var err error
		if fr.rawReady() {
			m, err = fr.readRaw() // takes the buffer once readable
			fr.emptied = err == nil && fr.w+m < len(fr.buf)
		} else {
			if fr.buf == nil {
				fr.take()
			}
			m, err = fr.read(fr.buf[fr.w:])
			fr.emptied = false
		}
		fr.w += m
		if err != nil {
			if fr.w-fr.r >= n {
				return nil
			}
			if err == io.EOF && fr.w > fr.r {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// next returns the next whole data message (opText or opBinary) or
// control frame (opClose, opPing, opPong) with its payload, valid until
// the following call. A protocol violation is a *wsFail; anything else
// is the connection's read error.
func (fr *frameReader) next() (int, []byte, error) {
	if fr.msgOp == 0 {
		fr.dropMsg() // the message returned last time
	}
	for {
		if err := fr.fill(2); err != nil {
			return 0, nil, err
		}
		b0, b1 := fr.buf[fr.r], fr.buf[fr.r+1]
		fin, op := b0&0x80 != 0, int(b0&0x0f)
		if b0&0x70 != 0 {
			return 0, nil, errRSV
		}
		control := op&8 != 0
		switch op {
		case opContinuation, opText, opBinary, opClose, opPing, opPong:
		default:
			return 0, nil, errOpcode
		}
		if b1&0x80 == 0 {
			return 0, nil, errUnmasked
		}
		n := int64(b1 & 0x7f)
		hlen := 2 + 4
		switch n {
		case 126:
			hlen += 2
		case 127:
			hlen += 8
		}
		if control {
			if !fin {
				return 0, nil, errCtlFragment
			}
			if n > maxControlPayload {
				return 0, nil, errCtlTooLong
			}
		} else if op == opContinuation && fr.msgOp == 0 {
			return 0, nil, errContinuation
		} else if op != opContinuation && fr.msgOp != 0 {
			return 0, nil, errInterleaved
		}
		if err := fr.fill(hlen); err != nil {
			return 0, nil, midFrame(err)
		}
		h := fr.buf[fr.r : fr.r+hlen]
		switch n {
		case 126:
			n = int64(binary.BigEndian.Uint16(h[2:]))
		case 127:
			u := binary.BigEndian.Uint64(h[2:])
			if u>>63 != 0 {
				return 0, nil, errLength
			}
			if u > uint64(fr.max) {
				return 0, nil, errTooBig
			}
			n = int64(u)
		}
		key := binary.LittleEndian.Uint32(h[hlen-4:])
		fr.r += hlen

		if control {
			if err := fr.fill(int(n)); err != nil {
				return 0, nil, midFrame(err)
			}
			p := fr.buf[fr.r : fr.r+int(n)]
			fr.r += int(n)
			mask(key, 0, p)
			return op, p, nil
		}

		size := int64(0)
		if fr.mp != nil {
			size = int64(len(*fr.mp))
		}
		if size+n > int64(fr.max) {
			return 0, nil, errTooBig
		}
		text := op == opText || (op == opContinuation && fr.msgOp == opText)
		if op != opContinuation {
			fr.msgOp = op
			fr.utf = utf8State{}
		}
		// Fast path: a whole unfragmented message already read.
		if fin && op != opContinuation && int64(fr.w-fr.r) >= n {
			p := fr.buf[fr.r : fr.r+int(n)]
			fr.r += int(n)
			fr.msgOp = 0
			mask(key, 0, p)
			if text && (!fr.utf.valid(p) || !fr.utf.complete()) {
				return 0, nil, errTextUTF8
			}
			return op, p, nil
		}
		if err := fr.readPayload(key, int(n), text); err != nil {
			return 0, nil, err
		}
		if !fin {
			continue
		}
		if text && !fr.utf.complete() {
			return 0, nil, errTextUTF8
		}
		op, fr.msgOp = fr.msgOp, 0
		return op, *fr.mp, nil
	}
}

// readPayload appends n masked payload bytes to the message being
// assembled, unmasking and validating each piece as it arrives.
func (fr *frameReader) readPayload(key uint32, n int, text bool) error {
	if fr.mp == nil {
		fr.mp = msgPool.Get().(*[]byte)
		*fr.mp = (*fr.mp)[:0]
	}
	msg := *fr.mp
	pos := 0
	for pos < n {
		start := len(msg)
		if fr.r < fr.w {
			k := min(fr.w-fr.r, n-pos)
			msg = append(msg, fr.buf[fr.r:fr.r+k]...)
			fr.r += k
		} else if n-pos >= frameReadBufferBytes {
			// A large rest: read it straight into the message. The message
			// grows as bytes arrive (as append does), never by what a
			// header merely announces.
			if cap(msg)-start < frameReadBufferBytes {
				msg = slices.Grow(msg, min(n-pos, max(start, 64<<10)))
			}
			p := msg[start:min(cap(msg), start+n-pos)]
			m, err := fr.read(p)
			fr.emptied = err == nil && m < len(p) && fr.br == nil // from the socket, which it emptied
			msg = msg[:start+m]
			if m == 0 && err != nil {
				*fr.mp = msg
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		} else {
			fr.r, fr.w = 0, 0
			if err := fr.fill(1); err != nil {
				*fr.mp = msg
				return midFrame(err)
			}
			continue
		}
		p := msg[start:]
		mask(key, pos, p)
		pos += len(p)
		if text && !fr.utf.valid(p) {
			*fr.mp = msg
			return errTextUTF8
		}
	}
	*fr.mp = msg
	return nil
}

// midFrame: the connection ended inside a frame.
func midFrame(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// mask XORs p with the 4-byte masking key (little-endian as it sits on
// the wire), starting pos bytes into the payload. Its own inverse.
func mask(key uint32, pos int, p []byte) {
	if len(p) == 0 {
		return
	}
	// Rotate the key so that byte 0 of p lines up with key byte pos%4.
	if s := uint(pos&3) * 8; s != 0 {
		key = key>>s | key<<(32-s)
	}
	i := 0
	if len(p) >= 8 {
		k := uint64(key) | uint64(key)<<32
		for ; i+8 <= len(p); i += 8 {
			binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k)
		}
	}
	for ; i < len(p); i++ {
		p[i] ^= byte(key >> (uint(i&3) * 8))
	}
}

// utf8State validates UTF-8 incrementally (RFC 3629, Unicode table 3-7):
// need is how many continuation bytes are still due, lo..hi the range the
// next one must fall in (narrower than 0x80..0xBF only for the second byte
// after E0, ED, F0 and F4: no overlongs, surrogates or code points past
// U+10FFFF). A prefix that no continuation could make valid fails at once.
type utf8State struct {
	need   uint8
	lo, hi byte
}

func (s *utf8State) complete() bool { return s.need == 0 }

func (s *utf8State) valid(p []byte) bool {
	i := 0
	for i < len(p) {
		if s.need == 0 {
			for i+8 <= len(p) && binary.LittleEndian.Uint64(p[i:])&0x8080808080808080 == 0 {
				i += 8
			}
			if i == len(p) {
				return true
			}
			c := p[i]
			i++
			switch {
			case c < 0x80:
			case c < 0xC2:
				return false
			case c < 0xE0:
				*s = utf8State{1, 0x80, 0xBF}
			case c == 0xE0:
				*s = utf8State{2, 0xA0, 0xBF}
			case c == 0xED:
				*s = utf8State{2, 0x80, 0x9F}
			case c < 0xF0:
				*s = utf8State{2, 0x80, 0xBF}
			case c == 0xF0:
				*s = utf8State{3, 0x90, 0xBF}
			case c < 0xF4:
				*s = utf8State{3, 0x80, 0xBF}
			case c == 0xF4:
				*s = utf8State{3, 0x80, 0x8F}
			default:
				return false
			}
			continue
		}
		c := p[i]
		i++
		if c < s.lo || c > s.hi {
			return false
		}
		s.need--
		s.lo, s.hi = 0x80, 0xBF
	}
	return true
}

// validCloseCode reports whether a peer may send code (RFC 6455 7.4, and
// the IANA registry: 1012-1014 are registered; 1004-1006 and 1015 may
// never be sent; 1016-2999 are reserved; 3000-4999 are for applications).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// parseClose validates a close frame's payload: no code (1005), or a
// valid code and a UTF-8 reason.
func parseClose(p []byte) (int, string, error) {
	switch {
	case len(p) == 0:
		return CloseNoStatus, "", nil
	case len(p) == 1:
		return 0, "", errCloseShort
	}
	code := int(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return 0, "", errCloseCode
	}
	var u utf8State
	if !u.valid(p[2:]) || !u.complete() {
		return 0, "", errCloseUTF8
	}
	return code, string(p[2:]), nil
}

// appendFrameHeader appends an unmasked server frame header (FIN set).
func appendFrameHeader(b []byte, op int, n int) []byte {
	b = append(b, 0x80|byte(op))
	switch {
	case n <= 125:
		return append(b, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
}

// closePayload is a close frame's payload: code and reason (cut to fit a
// control frame); code 0 or 1005 means none.
func closePayload(code int, reason string) []byte {
	if code == 0 || code == CloseNoStatus {
		return nil
	}
	if n := maxControlPayload - 2; len(reason) > n {
		for n > 0 && !utf8.RuneStart(reason[n]) {
			n--
		}
		reason = reason[:n]
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// isFail reports a protocol failure and returns it.
func isFail(err error) (*wsFail, bool) {
	var f *wsFail
	ok := errors.As(err, &f)
	return f, ok
}
