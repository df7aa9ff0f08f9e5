package ipc

import (
	"bytes"
	"testing"
)

// TestConstants pins every wire-format number. A renumbered constant breaks
// compatibility between a master and workers built from different commits,
// so it must fail here rather than in production.
func TestConstants(t *testing.T) {
	tests := []struct {
		name string
		got  uint64
		want uint64
	}{
		{name: "Version", got: uint64(Version), want: 5},
		{name: "BroadcastSkippedSize", got: BroadcastSkippedSize, want: 4},
		{name: "ClosedReply", got: uint64(ClosedReply), want: 1},
		{name: "BroadcastExt", got: uint64(BroadcastExt), want: 0x40},
		{name: "BroadcastStamp", got: uint64(BroadcastStamp), want: 1},
		{name: "BroadcastResultSize", got: BroadcastResultSize, want: 16},
		{name: "RecoverResultSize", got: RecoverResultSize, want: 17},
		{name: "RecoverChunk", got: uint64(RecoverChunk), want: 1},
		{name: "SessionGet", got: uint64(SessionGet), want: 0},
		{name: "SessionSet", got: uint64(SessionSet), want: 1},
		{name: "SessionUpdate", got: uint64(SessionUpdate), want: 2},
		{name: "MaxSession", got: MaxSession, want: 64 << 10},
		{name: "HeaderSize", got: HeaderSize, want: 24},
		{name: "MaxPayload", got: MaxPayload, want: 64 << 20},
		{name: "DrainReload", got: uint64(DrainReload), want: 1},
		{name: "DrainStop", got: uint64(DrainStop), want: 2},
		{name: "DrainNow", got: uint64(DrainNow), want: 3},
		{name: "JoinCount", got: uint64(JoinCount), want: 1},
		{name: "TaskOrigin(0)", got: uint64(TaskOrigin(0)), want: 1},
		{name: "TaskOrigin(5)", got: uint64(TaskOrigin(5)), want: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

// allTypes is every frame type with its wire number.
var allTypes = []struct {
	name string
	typ  Type
	want uint8
}{
	{name: "TypeHello", typ: TypeHello, want: 1},
	{name: "TypeWelcome", typ: TypeWelcome, want: 2},
	{name: "TypeReady", typ: TypeReady, want: 3},
	{name: "TypeError", typ: TypeError, want: 4},
	{name: "TypeDrain", typ: TypeDrain, want: 5},
	{name: "TypeRetire", typ: TypeRetire, want: 6},
	{name: "TypeStats", typ: TypeStats, want: 7},
	{name: "TypeConns", typ: TypeConns, want: 8},
	{name: "TypeRequest", typ: TypeRequest, want: 10},
	{name: "TypeResponse", typ: TypeResponse, want: 11},
	{name: "TypeOpen", typ: TypeOpen, want: 12},
	{name: "TypeMessage", typ: TypeMessage, want: 13},
	{name: "TypeClosed", typ: TypeClosed, want: 14},
	{name: "TypeResume", typ: TypeResume, want: 15},
	{name: "TypeBuffer", typ: TypeBuffer, want: 16},
	{name: "TypePush", typ: TypePush, want: 20},
	{name: "TypeClose", typ: TypeClose, want: 21},
	{name: "TypeQuery", typ: TypeQuery, want: 22},
	{name: "TypeResult", typ: TypeResult, want: 23},
	{name: "TypeJoin", typ: TypeJoin, want: 24},
	{name: "TypeLeave", typ: TypeLeave, want: 25},
	{name: "TypeBroadcast", typ: TypeBroadcast, want: 26},
	{name: "TypeUID", typ: TypeUID, want: 95},
	{name: "TypeSession", typ: TypeSession, want: 96},
	{name: "TypeMembers", typ: TypeMembers, want: 97},
	{name: "TypeRecover", typ: TypeRecover, want: 98},
	{name: "TypeHistory", typ: TypeHistory, want: 99},
	{name: "TypePipe", typ: TypePipe, want: 27},
	{name: "TypeOpened", typ: TypeOpened, want: 28},
	{name: "TypeGone", typ: TypeGone, want: 29},
	{name: "TypeCount", typ: TypeCount, want: 30},
	{name: "TypeTask", typ: TypeTask, want: 40},
	{name: "TypeTaskResult", typ: TypeTaskResult, want: 41},
	{name: "TypeCredit", typ: TypeCredit, want: 50},
	{name: "TypePing", typ: TypePing, want: 51},
	{name: "TypePong", typ: TypePong, want: 52},
	{name: "TypeMetrics", typ: TypeMetrics, want: 60},
	{name: "TypeReopenLogs", typ: TypeReopenLogs, want: 61},
	{name: "TypeSecrets", typ: TypeSecrets, want: 70},
	{name: "TypeIDLease", typ: TypeIDLease, want: 80},
	{name: "TypeClusterNode", typ: TypeClusterNode, want: 90},
	{name: "TypeSend", typ: TypeSend, want: 110},
	{name: "TypeSendFailed", typ: TypeSendFailed, want: 111},
	{name: "TypeSendAck", typ: TypeSendAck, want: 112},
	{name: "TypeSendFlush", typ: TypeSendFlush, want: 113},
	{name: "TypeSendCredit", typ: TypeSendCredit, want: 120},
}

func TestTypeValues(t *testing.T) {
	seen := make(map[Type]string)
	for _, tt := range allTypes {
		t.Run(tt.name, func(t *testing.T) {
			if uint8(tt.typ) != tt.want {
				t.Errorf("got %v, want %v", uint8(tt.typ), tt.want)
			}
			if other, ok := seen[tt.typ]; ok {
				t.Errorf("got %s sharing number %d with %s, want unique numbers", tt.name, tt.typ, other)
			}
			seen[tt.typ] = tt.name
		})
	}
}

func TestOutcomeValues(t *testing.T) {
	tests := []struct {
		name    string
		outcome Outcome
		want    uint16
	}{
		{name: "OK", outcome: OK, want: 0},
		{name: "NoConnection", outcome: NoConnection, want: 1},
		{name: "Closed", outcome: Closed, want: 2},
		{name: "BufferFull", outcome: BufferFull, want: 3},
		{name: "Timeout", outcome: Timeout, want: 4},
		{name: "TooLarge", outcome: TooLarge, want: 5},
		{name: "Unavailable", outcome: Unavailable, want: 6},
		{name: "Failed", outcome: Failed, want: 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if uint16(tt.outcome) != tt.want {
				t.Errorf("got %v, want %v", uint16(tt.outcome), tt.want)
			}
		})
	}
}

// goldenHeader uses a distinct byte value in every position, so a swapped,
// shifted or big-endian field shows up in the golden bytes.
var goldenHeader = Header{
	Len:   0x04030201,
	Type:  TypePush, // 0x14
	Flags: 0x02,
	Code:  0x0706,
	Conn:  0x0f0e0d0c0b0a0908,
	Seq:   0x13121110,
	Arg:   0x17161514,
}

var goldenHeaderBytes = []byte{
	// offset 0, len (little endian)
	0x01, 0x02, 0x03, 0x04,
	// offset 4, type; offset 5, flags
	0x14, 0x02,
	// offset 6, code
	0x06, 0x07,
	// offset 8, conn
	0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
	// offset 16, seq
	0x10, 0x11, 0x12, 0x13,
	// offset 20, arg
	0x14, 0x15, 0x16, 0x17,
}

func TestPutHeaderGolden(t *testing.T) {
	h := goldenHeader
	got := make([]byte, HeaderSize)
	PutHeader(got, &h)
	if !bytes.Equal(got, goldenHeaderBytes) {
		t.Fatalf("got % x, want % x", got, goldenHeaderBytes)
	}

	back, err := ParseHeader(got, 0xffffffff)
	if err != nil {
		t.Fatalf("ParseHeader: got error %v, want nil", err)
	}
	if back != goldenHeader {
		t.Errorf("ParseHeader: got %+v, want %+v", back, goldenHeader)
	}
}

func TestAppendFrameGolden(t *testing.T) {
	h := Header{Type: TypeMessage, Flags: 1, Conn: 7, Seq: 9}
	got := AppendFrame([]byte("prefix"), &h, []byte("ab"), []byte("c"))
	want := []byte("prefix" +
		"\x03\x00\x00\x00" + // len = 3, set from the parts
		"\x0d" + "\x01" + "\x00\x00" +
		"\x07\x00\x00\x00\x00\x00\x00\x00" +
		"\x09\x00\x00\x00" + "\x00\x00\x00\x00" +
		"abc")
	if !bytes.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if h.Len != 3 {
		t.Errorf("h.Len: got %v, want %v", h.Len, 3)
	}
}
