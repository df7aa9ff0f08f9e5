package ipc

import (
	"encoding/binary"
	"net/netip"
)

// AddrSize is the size of an encoded TCP address: the IP in 16 bytes (an
// IPv4 address mapped into IPv6) and the port, big endian. A Request frame
// carries the client's address this way, so that a worker sets it on the
// request without parsing text.
const AddrSize = 18

// AppendAddr appends the encoding of ap.
func AppendAddr(dst []byte, ap netip.AddrPort) []byte {
	ip := ap.Addr().As16()
	dst = append(dst, ip[:]...)
	return binary.BigEndian.AppendUint16(dst, ap.Port())
}

// ParseAddr decodes an address AppendAddr encoded; ok is false when b is
// not one (an empty field: the client's address is not a TCP address).
func ParseAddr(b []byte) (ip []byte, port int, ok bool) {
	if len(b) != AddrSize {
		return nil, 0, false
	}
	return b[:16:16], int(binary.BigEndian.Uint16(b[16:])), true
}
