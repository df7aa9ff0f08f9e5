package ipc

import "encoding/binary"

// Payloads of the users, sessions, groups and history frames (95-99) and
// of the extended Broadcast. Every integer is little endian; a room is
// u16 length + bytes.

// BroadcastExt, in a Broadcast frame's flags (next to the opcode), says the
// payload is extended: room, then u16 n + n u64 connection ids to skip,
// then u8 options (BroadcastStamp), then the message's seq u64 and its
// room's epoch u32 (0 from a worker; the master's numbers on the frame it
// routes, which whoever answers reports back), then the data.
const BroadcastExt uint8 = 0x40

// BroadcastStamp, in an extended Broadcast's options: the data is a JSON
// object; the history owner writes "seq" and "epoch" into it before it is
// kept and fanned out.
const BroadcastStamp uint8 = 1

// BroadcastResultSize is the payload of a Broadcast's Result: skipped u32
// (BroadcastSkippedSize), then the message's seq u64 and the room's epoch
// u32 (both 0 for a uid's room, which keeps no history).
const BroadcastResultSize = 16

// Session operations, in a Session frame's flags.
const (
	SessionGet    uint8 = 0
	SessionSet    uint8 = 1 // replace the session with the payload's object
	SessionUpdate uint8 = 2 // merge the payload's keys into it
)

// RecoverChunk, in a Recover frame's flags (m->w, BASE), says the frame is
// one page of a paced replay (its room is empty): push its messages once
// the connection's send buffer has room for them, answer once it has
// drained to half, and do not join; the last page comes without it.
const RecoverChunk uint8 = 1

// MaxSession is the largest session a connection keeps, as JSON.
const MaxSession = 64 << 10

// CutRoom reads a room from the front of p and returns the rest.
func CutRoom(p []byte) (string, []byte, bool) {
	if len(p) < 2 {
		return "", nil, false
	}
	n := int(binary.LittleEndian.Uint16(p))
	if len(p) < 2+n {
		return "", nil, false
	}
	return string(p[2 : 2+n]), p[2+n:], true
}

// Broadcast is a decoded Broadcast payload.
type Broadcast struct {
	Room    string
	Exclude []uint64 // besides the header's conn
	Options uint8
	Seq     uint64 // the message's number in its room (extended only)
	Epoch   uint32
	Data    []byte
}

// AppendBroadcastExt encodes an extended Broadcast payload up to its data
// (flags must carry BroadcastExt).
func AppendBroadcastExt(dst []byte, room string, exclude []uint64, opts uint8, seq uint64, epoch uint32) []byte {
	dst = AppendRoom(dst, room)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(exclude)))
	for _, id := range exclude {
		dst = binary.LittleEndian.AppendUint64(dst, id)
	}
	dst = append(dst, opts)
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	return binary.LittleEndian.AppendUint32(dst, epoch)
}

// ParseBroadcast decodes a Broadcast payload, plain or extended.
func ParseBroadcast(flags uint8, p []byte) (Broadcast, bool) {
	var b Broadcast
	room, rest, ok := CutRoom(p)
	if !ok {
		return b, false
	}
	b.Room = room
	if flags&BroadcastExt == 0 {
		b.Data = rest
		return b, true
	}
	if len(rest) < 2 {
		return b, false
	}
	n := int(binary.LittleEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) < 8*n+13 {
		return b, false
	}
	b.Exclude = make([]uint64, n)
	for i := range b.Exclude {
		b.Exclude[i] = binary.LittleEndian.Uint64(rest[8*i:])
	}
	rest = rest[8*n:]
	b.Options = rest[0]
	b.Seq = binary.LittleEndian.Uint64(rest[1:])
	b.Epoch = binary.LittleEndian.Uint32(rest[9:])
	b.Data = rest[13:]
	return b, true
}

// BroadcastResult is the payload of a Broadcast's Result.
type BroadcastResult struct {
	Skipped uint32
	Seq     uint64
	Epoch   uint32
}

// Append encodes r.
func (r BroadcastResult) Append(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, r.Skipped)
	dst = binary.LittleEndian.AppendUint64(dst, r.Seq)
	return binary.LittleEndian.AppendUint32(dst, r.Epoch)
}

// ParseBroadcastResult decodes a Broadcast Result's payload; a shorter one
// (skipped only, or nothing) leaves the rest zero.
func ParseBroadcastResult(p []byte) BroadcastResult {
	var r BroadcastResult
	if len(p) >= 4 {
		r.Skipped = binary.LittleEndian.Uint32(p)
	}
	if len(p) >= BroadcastResultSize {
		r.Seq = binary.LittleEndian.Uint64(p[4:])
		r.Epoch = binary.LittleEndian.Uint32(p[12:])
	}
	return r
}

// Recover asks the history owner to join a connection (the header's conn)
// to a room, first replaying what the room broadcast after Since.
type Recover struct {
	Room     string
	Since    uint64
	Epoch    uint32 // 0: the client did not say which epoch its Since is from
	HasSince bool   // false: a plain join that still reports the room's seq
}

// Append encodes r.
func (r Recover) Append(dst []byte) []byte {
	dst = AppendRoom(dst, r.Room)
	dst = binary.LittleEndian.AppendUint64(dst, r.Since)
	dst = binary.LittleEndian.AppendUint32(dst, r.Epoch)
	var f uint8
	if r.HasSince {
		f = 1
	}
	return append(dst, f)
}

// ParseRecover decodes a Recover payload.
func ParseRecover(p []byte) (Recover, bool) {
	var r Recover
	room, rest, ok := CutRoom(p)
	if !ok || len(rest) < 13 {
		return r, false
	}
	r.Room = room
	r.Since = binary.LittleEndian.Uint64(rest)
	r.Epoch = binary.LittleEndian.Uint32(rest[8:])
	r.HasSince = rest[12] == 1
	return r, true
}

// RecoverResult is what a recovery did: Gap when what was missed could not
// be replayed (too old, or another epoch), then how many messages were
// replayed, and the room's seq and epoch at the join. It is the payload of
// the Recover's Result, and the head of the replay the master sends a
// BASE-mode owner.
type RecoverResult struct {
	Gap      bool
	Seq      uint64
	Epoch    uint32
	Replayed uint32
}

// RecoverResultSize is the encoded size of a RecoverResult.
const RecoverResultSize = 17

// Append encodes r.
func (r RecoverResult) Append(dst []byte) []byte {
	var g uint8
	if r.Gap {
		g = 1
	}
	dst = append(dst, g)
	dst = binary.LittleEndian.AppendUint64(dst, r.Seq)
	dst = binary.LittleEndian.AppendUint32(dst, r.Epoch)
	return binary.LittleEndian.AppendUint32(dst, r.Replayed)
}

// ParseRecoverResult decodes a RecoverResult and returns what follows it.
func ParseRecoverResult(p []byte) (RecoverResult, []byte, bool) {
	var r RecoverResult
	if len(p) < RecoverResultSize {
		return r, nil, false
	}
	r.Gap = p[0] == 1
	r.Seq = binary.LittleEndian.Uint64(p[1:])
	r.Epoch = binary.LittleEndian.Uint32(p[9:])
	r.Replayed = binary.LittleEndian.Uint32(p[13:])
	return r, p[RecoverResultSize:], true
}

// AppendReplayed appends one replayed message: op u8, length u32, data.
func AppendReplayed(dst []byte, op uint8, data []byte) []byte {
	dst = append(dst, op)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(data)))
	return append(dst, data...)
}

// NextReplayed reads one replayed message from p and returns the rest.
func NextReplayed(p []byte) (op uint8, data, rest []byte, ok bool) {
	if len(p) < 5 {
		return 0, nil, nil, false
	}
	n := int(binary.LittleEndian.Uint32(p[1:]))
	if len(p) < 5+n {
		return 0, nil, nil, false
	}
	return p[0], p[5 : 5+n], p[5+n:], true
}

// MembersQuery asks for up to Limit members of Room with a connection id
// above After (ids ascending: a page).
type MembersQuery struct {
	Room  string
	After uint64
	Limit uint32
}

// Append encodes q.
func (q MembersQuery) Append(dst []byte) []byte {
	dst = AppendRoom(dst, q.Room)
	dst = binary.LittleEndian.AppendUint64(dst, q.After)
	return binary.LittleEndian.AppendUint32(dst, q.Limit)
}

// ParseMembersQuery decodes a MembersQuery.
func ParseMembersQuery(p []byte) (MembersQuery, bool) {
	var q MembersQuery
	room, rest, ok := CutRoom(p)
	if !ok || len(rest) < 12 {
		return q, false
	}
	q.Room = room
	q.After = binary.LittleEndian.Uint64(rest)
	q.Limit = binary.LittleEndian.Uint32(rest[8:])
	return q, true
}

// Member is one member of a room: its connection and the uid bound to it.
type Member struct {
	Conn uint64 `json:"conn"`
	UID  string `json:"uid,omitempty"`
}

// MembersPage is the payload of a Members Result: a page of members, by
// connection id (ids start with their node: a page runs node by node),
// and the cluster nodes that did not answer within --cluster-timeout
// (their members are missing from the page).
type MembersPage struct {
	Members []Member `json:"members"`
	Missing []int    `json:"missing,omitempty"`
}

// AppendMissing encodes a Count Result's payload: the cluster nodes (one
// byte each) that did not answer within --cluster-timeout.
func AppendMissing(dst []byte, nodes []int) []byte {
	for _, n := range nodes {
		dst = append(dst, byte(n))
	}
	return dst
}

// ParseMissing decodes a Count Result's payload (AppendMissing).
func ParseMissing(p []byte) []int {
	if len(p) == 0 {
		return nil
	}
	out := make([]int, len(p))
	for i, b := range p {
		out[i] = int(b)
	}
	return out
}

// History is a room's history limits: the last Max messages, none older
// than TTLMillis (0: no age limit). Both 0: no history.
type History struct {
	Room      string
	Max       uint32
	TTLMillis uint64
}

// Append encodes h.
func (h History) Append(dst []byte) []byte {
	dst = AppendRoom(dst, h.Room)
	dst = binary.LittleEndian.AppendUint32(dst, h.Max)
	return binary.LittleEndian.AppendUint64(dst, h.TTLMillis)
}

// ParseHistory decodes a History.
func ParseHistory(p []byte) (History, bool) {
	var h History
	room, rest, ok := CutRoom(p)
	if !ok || len(rest) < 12 {
		return h, false
	}
	h.Room = room
	h.Max = binary.LittleEndian.Uint32(rest)
	h.TTLMillis = binary.LittleEndian.Uint64(rest[4:])
	return h, true
}
