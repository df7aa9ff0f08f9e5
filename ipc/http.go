package ipc

import "encoding/binary"

// HTTP responses travel from worker to master as a compact header section
// followed by the body (a Response frame's arg is the section's length):
//
//	u16 status, u8 flags (1 = Connection: close), u16 header count,
//	then per header: u16 name length, name, u32 value length, value.
//
// The master applies it to its fasthttp response without re-parsing HTTP.

// RespClose is the response flag for Connection: close.
const RespClose = 1

// AppendResponseHead starts a response header section.
func AppendResponseHead(dst []byte, status int, flags uint8) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(status))
	dst = append(dst, flags)
	return append(dst, 0, 0) // header count, patched by AppendResponseHeader
}

// AppendResponseHeader adds one header to a section started by
// AppendResponseHead at dst[start:].
func AppendResponseHeader(dst []byte, start int, k, v []byte) []byte {
	n := binary.LittleEndian.Uint16(dst[start+3:])
	binary.LittleEndian.PutUint16(dst[start+3:], n+1)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(k)))
	dst = append(dst, k...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
	return append(dst, v...)
}

// ParseResponseHead decodes a header section, calling f for each header
// (k and v alias b).
func ParseResponseHead(b []byte, f func(k, v []byte)) (status int, flags uint8, err error) {
	if len(b) < 5 {
		return 0, 0, ErrMalformed
	}
	status = int(binary.LittleEndian.Uint16(b))
	flags = b[2]
	n := int(binary.LittleEndian.Uint16(b[3:]))
	b = b[5:]
	for i := 0; i < n; i++ {
		if len(b) < 2 {
			return 0, 0, ErrMalformed
		}
		kl := int(binary.LittleEndian.Uint16(b))
		if len(b) < 2+kl+4 {
			return 0, 0, ErrMalformed
		}
		k := b[2 : 2+kl]
		vl := binary.LittleEndian.Uint32(b[2+kl:])
		b = b[2+kl+4:]
		if uint64(vl) > uint64(len(b)) {
			return 0, 0, ErrMalformed
		}
		f(k, b[:vl])
		b = b[vl:]
	}
	if len(b) != 0 {
		return 0, 0, ErrMalformed
	}
	return status, flags, nil
}
