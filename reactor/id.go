package reactor

import "strconv"

// Connection ids encode their owner so any process routes a push to the
// process holding the connection without a lookup, and a sequence so that a
// stale id (a connection long closed, a worker since restarted) is rejected:
//
//	bits 63..48  owner: worker slot, or MasterOwner for the PROCESS-mode reactor
//	bits 47..32  epoch: the owner's incarnation (changes on every restart)
//	bits 31..0   sequence within that incarnation
const (
	MasterOwner = 0xFFFF
)

// MakeID builds a connection id.
func MakeID(owner, epoch uint16, seq uint32) uint64 {
	return uint64(owner)<<48 | uint64(epoch)<<32 | uint64(seq)
}

// Owner returns the owner encoded in id.
func Owner(id uint64) uint16 { return uint16(id >> 48) }

// Epoch returns the owner's incarnation encoded in id.
func Epoch(id uint64) uint16 { return uint16(id >> 32) }

// FormatID renders an id as users see it (decimal).
func FormatID(id uint64) string { return strconv.FormatUint(id, 10) }

// ParseID parses an id rendered by FormatID.
func ParseID(s string) (uint64, error) { return strconv.ParseUint(s, 10, 64) }
