package reactor

import (
	"encoding/binary"
	"errors"
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
