package ipc

import (
	"encoding/binary"
	"fmt"
)

// Header is a decoded frame header. Len is the payload length.
type Header struct {
	Len   uint32
	Type  Type
	Flags uint8
	Code  uint16
	Conn  uint64
	Seq   uint32
	Arg   uint32
}

// Frame is a header with its payload. A Frame returned by Reader.Next
// aliases the reader's buffer and is valid until the next call.
type Frame struct {
	Header
	Payload []byte
}

// PutHeader writes h into b[:HeaderSize].
func PutHeader(b []byte, h *Header) {
	_ = b[HeaderSize-1]
	binary.LittleEndian.PutUint32(b[0:], h.Len)
	b[4] = byte(h.Type)
	b[5] = h.Flags
	binary.LittleEndian.PutUint16(b[6:], h.Code)
	binary.LittleEndian.PutUint64(b[8:], h.Conn)
	binary.LittleEndian.PutUint32(b[16:], h.Seq)
	binary.LittleEndian.PutUint32(b[20:], h.Arg)
}

// ParseHeader decodes b[:HeaderSize]. It rejects a length over max before
// anything is allocated for the payload.
func ParseHeader(b []byte, max int) (Header, error) {
	_ = b[HeaderSize-1]
	h := Header{
		Len:   binary.LittleEndian.Uint32(b[0:]),
		Type:  Type(b[4]),
		Flags: b[5],
		Code:  binary.LittleEndian.Uint16(b[6:]),
		Conn:  binary.LittleEndian.Uint64(b[8:]),
		Seq:   binary.LittleEndian.Uint32(b[16:]),
		Arg:   binary.LittleEndian.Uint32(b[20:]),
	}
	if int64(h.Len) > int64(max) {
		return h, fmt.Errorf("%w: %d > %d (type %d)", ErrTooLarge, h.Len, max, h.Type)
	}
	return h, nil
}

// AppendFrame appends the encoding of h followed by the payload parts to
// dst. h.Len is set from the parts. It does not allocate when dst has room.
func AppendFrame(dst []byte, h *Header, a, b []byte) []byte {
	h.Len = uint32(len(a) + len(b))
	n := len(dst)
	dst = grow(dst, HeaderSize)
	PutHeader(dst[n:], h)
	dst = append(dst, a...)
	return append(dst, b...)
}

func grow(b []byte, n int) []byte {
	l := len(b)
	if cap(b)-l < n {
		nb := make([]byte, l, 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:l+n]
}
