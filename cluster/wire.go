package cluster

import (
	"encoding/base64"
	"encoding/binary"
	"errors"

	"github.com/forkd/forkd/ipc"
)

// Subjects. Room names and node names are base64url-encoded in subjects, so
// any name (dots, spaces, wildcards) is one token.
const (
	subjNode     = "forkd.node."    // + number: unicast operations for that node
	subjName     = "forkd.name."    // + name: answered by the node of that name
	subjRoom     = "forkd.room."    // + room: broadcasts, subscribed while the node has members
	subjCount    = "forkd.count"    // member-count gathers (every node answers)
	subjPresence = "forkd.presence" // heartbeats (every node publishes and listens)
)

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// Operation kinds besides the ipc bus types they carry (Push, Close, Query,
// Join, Leave, Pipe, Count).
const (
	opPing  uint8 = 0   // is this node number taken? answers the holder's name
	opConns uint8 = 255 // one page of the node's connections
)

// connsMissing, in the flags of an opConns request, asks for the answer
// that names the workers that did not answer: the JSON object
// {"page":[...],"missing_workers":[ID,...]} (conns.go). Without it (a node
// of an older build asking) the answer is the page alone, a JSON array, as
// it always was; an older node ignores the flag and sends the array.
const connsMissing uint8 = 1

// Op is one operation sent to another node. Its fields mirror the ipc
// header of the bus frame it carries.
type Op struct {
	Type  uint8
	Flags uint8
	Code  uint16
	Arg   uint32
	Conn  uint64
	Data  []byte
}

// Result is the outcome of an Op on the node that ran it.
type Result struct {
	Outcome ipc.Outcome
	Arg     uint32
	Data    []byte
}

const opHead = 16

var errShort = errors.New("cluster: short message")

func (o *Op) encode() []byte {
	b := make([]byte, opHead, opHead+len(o.Data))
	b[0], b[1] = o.Type, o.Flags
	binary.LittleEndian.PutUint16(b[2:], o.Code)
	binary.LittleEndian.PutUint32(b[4:], o.Arg)
	binary.LittleEndian.PutUint64(b[8:], o.Conn)
	return append(b, o.Data...)
}

func decodeOp(b []byte) (Op, error) {
	if len(b) < opHead {
		return Op{}, errShort
	}
	return Op{Type: b[0], Flags: b[1], Code: binary.LittleEndian.Uint16(b[2:]),
		Arg: binary.LittleEndian.Uint32(b[4:]), Conn: binary.LittleEndian.Uint64(b[8:]), Data: b[opHead:]}, nil
}

func (r *Result) encode() []byte {
	b := make([]byte, 6, 6+len(r.Data))
	binary.LittleEndian.PutUint16(b, uint16(r.Outcome))
	binary.LittleEndian.PutUint32(b[2:], r.Arg)
	return append(b, r.Data...)
}

func decodeResult(b []byte) (Result, error) {
	if len(b) < 6 {
		return Result{}, errShort
	}
	return Result{Outcome: ipc.Outcome(binary.LittleEndian.Uint16(b)), Arg: binary.LittleEndian.Uint32(b[2:]), Data: b[6:]}, nil
}

// Cast is one room message between nodes: the opcode, the connections
// it skips (ids carry their node, so each node skips its own), and the
// number the room's history owner gave it (Seq 0: not numbered, a uid's
// room).
type Cast struct {
	Flags   uint8
	Except  uint64
	Exclude []uint64
	Seq     uint64
	Epoch   uint32
	Data    []byte
}

// castHead: flags u8, except u64, seq u64, epoch u32, n u16, then n u64
// excluded ids, then the data.
const castHead = 23

func encodeCast(c Cast) []byte {
	b := make([]byte, castHead, castHead+8*len(c.Exclude)+len(c.Data))
	b[0] = c.Flags
	binary.LittleEndian.PutUint64(b[1:], c.Except)
	binary.LittleEndian.PutUint64(b[9:], c.Seq)
	binary.LittleEndian.PutUint32(b[17:], c.Epoch)
	binary.LittleEndian.PutUint16(b[21:], uint16(len(c.Exclude)))
	for _, id := range c.Exclude {
		b = binary.LittleEndian.AppendUint64(b, id)
	}
	return append(b, c.Data...)
}

func decodeCast(b []byte) (Cast, error) {
	if len(b) < castHead {
		return Cast{}, errShort
	}
	c := Cast{Flags: b[0], Except: binary.LittleEndian.Uint64(b[1:]), Seq: binary.LittleEndian.Uint64(b[9:]),
		Epoch: binary.LittleEndian.Uint32(b[17:])}
	n := int(binary.LittleEndian.Uint16(b[21:]))
	b = b[castHead:]
	if len(b) < 8*n {
		return Cast{}, errShort
	}
	if n > 0 {
		c.Exclude = make([]uint64, n)
		for i := range c.Exclude {
			c.Exclude[i] = binary.LittleEndian.Uint64(b[8*i:])
		}
	}
	c.Data = b[8*n:]
	return c, nil
}
