package reactor

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
)

// Connection ids encode their owner so any process routes a push to the
// process holding the connection without a lookup, and a sequence so that a
// stale id (a connection long closed, an owner since restarted) is rejected.
// Every id fits in 53 bits: PHP's int, a signed SQL BIGINT and a JavaScript
// Number all hold it exactly.
//
//	bits 63..53  always 0
//	bits 52..47  node: the server in a cluster (0: a single server)
//	bits 46..37  owner: worker slot (BASE mode), or MasterOwner (the PROCESS-mode reactor)
//	bits 36..0   sequence
//
// Sequences are leased: the master hands each owner incarnation ranges of
// IDLease sequences from one counter that only grows (and that it keeps in
// its run dir across restarts), so a restarted owner never issues, and so
// never accepts, an id of an earlier incarnation: that id is simply not in
// its table. Only after 2^37 sequences (137 billion connections) does the
// counter wrap, and an id still in use is then skipped.
const (
	NodeBits  = 6
	OwnerBits = 10
	SeqBits   = 37
	IDBits    = NodeBits + OwnerBits + SeqBits // 53

	MaxNode     = 1<<NodeBits - 1
	MasterOwner = 1<<OwnerBits - 1 // 1023; BASE worker slots are 0..1022
	MaxSeq      = 1<<SeqBits - 1
	MaxID       = 1<<IDBits - 1

	// IDLease is how many sequences one lease carries.
	IDLease = 1 << 16
)

// MakeID builds a connection id.
func MakeID(node, owner uint16, seq uint64) uint64 {
	return uint64(node&MaxNode)<<(OwnerBits+SeqBits) | uint64(owner&MasterOwner)<<SeqBits | seq&MaxSeq
}

// Node returns the cluster node encoded in id.
func Node(id uint64) uint16 { return uint16(id>>(OwnerBits+SeqBits)) & MaxNode }

// Owner returns the owner encoded in id.
func Owner(id uint64) uint16 { return uint16(id>>SeqBits) & MasterOwner }

// Seq returns the sequence encoded in id.
func Seq(id uint64) uint64 { return id & MaxSeq }

// FormatID renders an id as users see it (decimal).
func FormatID(id uint64) string { return strconv.FormatUint(id, 10) }

// ParseID parses an id rendered by FormatID; over MaxID is an error.
func ParseID(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if v > MaxID {
		return 0, fmt.Errorf("reactor: id %d is over the %d-bit maximum", v, IDBits)
	}
	return v, nil
}

// LeaseFunc returns the first sequence of a new lease of IDLease sequences.
type LeaseFunc func() (uint64, error)

// ErrNoIDs means the reactor could not get a sequence lease.
var ErrNoIDs = errors.New("reactor: no connection id lease")

// idSource hands out the sequences of the leases it gets, in order.
type idSource struct {
	mu        sync.Mutex
	next, end uint64
	lease     LeaseFunc
}

func (s *idSource) take() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.next == 0 || s.next >= s.end {
		if s.lease == nil {
			return 0, ErrNoIDs
		}
		start, err := s.lease()
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrNoIDs, err)
		}
		s.next, s.end = start, start+IDLease
		if s.next == 0 {
			s.next = 1 // id 0 means "no connection"
		}
	}
	seq := s.next
	s.next++
	return seq, nil
}
