package ipc

import "encoding/binary"

// Payload layouts and codes that frames carry besides their type: part of
// the wire format, pinned by const_test.go, listed in docs/ipc.md.

// Drain codes, in a Drain frame's code.
const (
	DrainReload uint16 = 1 // graceful, the worker is being replaced
	DrainStop   uint16 = 2 // graceful stop
	DrainNow    uint16 = 3 // stop now
)

// JoinCount, in a Join frame's flags (BASE w->m), says the frame reports
// the worker's new local member count of the room (arg) rather than one
// connection joining.
const JoinCount uint8 = 1

// AppendRoom appends a Broadcast frame's payload head to b: the room's
// length (u16 LE), then the room; the message follows it.
func AppendRoom(b []byte, room string) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(room)))
	return append(b, room...)
}

// SplitRoom splits a Broadcast payload into room and message.
func SplitRoom(p []byte) (string, []byte, bool) {
	if len(p) < 2 {
		return "", nil, false
	}
	n := int(binary.LittleEndian.Uint16(p))
	if len(p) < 2+n {
		return "", nil, false
	}
	return string(p[2 : 2+n]), p[2+n:], true
}

// TaskOrigin is a Task frame's arg for a task from slot: slot+1 in the low
// 16 bits (0: none).
func TaskOrigin(slot int) uint32 { return uint32(slot) + 1 }

// TaskFrom is the origin slot a Task frame's arg names (-1: none).
func TaskFrom(arg uint32) int { return int(arg&0xFFFF) - 1 }

// SkippedOf reads a Broadcast Result's payload (BroadcastSkippedSize).
func SkippedOf(p []byte) int {
	if len(p) < BroadcastSkippedSize {
		return 0
	}
	return int(binary.LittleEndian.Uint32(p))
}

// AppendSkipped encodes a Broadcast Result's payload.
func AppendSkipped(dst []byte, skipped int) []byte {
	return binary.LittleEndian.AppendUint32(dst, uint32(skipped))
}
