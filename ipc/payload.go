package ipc

import (
	"encoding/binary"
	"errors"
)

// ErrMalformed reports a payload whose fields do not fit its length.
var ErrMalformed = errors.New("ipc: malformed payload")

// AppendField appends b with a u32 length prefix.
func AppendField(dst, b []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

// AppendString is AppendField for a string.
func AppendString(dst []byte, s string) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

// NextField splits a u32-length-prefixed field off b.
func NextField(b []byte) (field, rest []byte, err error) {
	if len(b) < 4 {
		return nil, nil, ErrMalformed
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, nil, ErrMalformed
	}
	return b[4 : 4+n : 4+n], b[4+n:], nil
}

// Handshake is what a worker learns about a WebSocket connection it serves:
// the client's address and the original upgrade request (URI and headers).
type Handshake struct {
	Remote []byte
	URI    []byte // path and query, as requested
	Header []byte // raw request header block, as "Name: value\r\n" lines
	Since  int64  // unix milliseconds the connection opened
}

// AppendHandshake appends the encoding of hs to dst.
func AppendHandshake(dst []byte, hs *Handshake) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(hs.Since))
	dst = AppendField(dst, hs.Remote)
	dst = AppendField(dst, hs.URI)
	return AppendField(dst, hs.Header)
}

// ParseHandshake decodes a handshake; its slices alias b.
func ParseHandshake(b []byte) (Handshake, error) {
	var hs Handshake
	if len(b) < 8 {
		return hs, ErrMalformed
	}
	hs.Since = int64(binary.LittleEndian.Uint64(b))
	var err error
	rest := b[8:]
	if hs.Remote, rest, err = NextField(rest); err != nil {
		return hs, err
	}
	if hs.URI, rest, err = NextField(rest); err != nil {
		return hs, err
	}
	if hs.Header, rest, err = NextField(rest); err != nil {
		return hs, err
	}
	if len(rest) != 0 {
		return hs, ErrMalformed
	}
	return hs, nil
}
