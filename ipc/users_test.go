package ipc

import (
	"bytes"
	"reflect"
	"testing"
)

// TestUsersPayloads: every users payload reads back as written, and a
// truncated one is refused rather than misread.
func TestUsersPayloads(t *testing.T) {
	ext := append(AppendBroadcastExt(nil, "room", []uint64{1, 1 << 52}, BroadcastStamp, 1<<40, 9), `{"a":1}`...)
	b, ok := ParseBroadcast(BroadcastExt|1, ext)
	if !ok || b.Room != "room" || !reflect.DeepEqual(b.Exclude, []uint64{1, 1 << 52}) || b.Options != BroadcastStamp ||
		b.Seq != 1<<40 || b.Epoch != 9 || string(b.Data) != `{"a":1}` {
		t.Errorf("extended broadcast: got %+v %v", b, ok)
	}
	plain := append(AppendRoom(nil, "r"), "data"...)
	if b, ok := ParseBroadcast(1, plain); !ok || b.Room != "r" || string(b.Data) != "data" || b.Exclude != nil {
		t.Errorf("plain broadcast: got %+v %v", b, ok)
	}
	for i := 0; i < len(ext)-len(`{"a":1}`); i++ {
		if _, ok := ParseBroadcast(BroadcastExt|1, ext[:i]); ok {
			t.Errorf("extended broadcast cut at %d: parsed", i)
		}
	}

	res := BroadcastResult{Skipped: 3, Seq: 1 << 40, Epoch: 77}
	if got := ParseBroadcastResult(res.Append(nil)); got != res {
		t.Errorf("broadcast result: got %+v, want %+v", got, res)
	}
	if got := ParseBroadcastResult([]byte{5, 0, 0, 0}); got != (BroadcastResult{Skipped: 5}) {
		t.Errorf("a skipped-only result: got %+v", got)
	}

	rc := Recover{Room: "lobby", Since: 42, Epoch: 9, HasSince: true}
	if got, ok := ParseRecover(rc.Append(nil)); !ok || got != rc {
		t.Errorf("recover: got %+v %v, want %+v", got, ok, rc)
	}
	rr := RecoverResult{Gap: true, Seq: 50, Epoch: 9, Replayed: 8}
	p := AppendReplayed(AppendReplayed(rr.Append(nil), 1, []byte("one")), 2, []byte{0, 1})
	got, rest, ok := ParseRecoverResult(p)
	if !ok || got != rr || len(p)-len(rest) != RecoverResultSize {
		t.Fatalf("recover result: got %+v %v", got, ok)
	}
	var msgs [][]byte
	for len(rest) > 0 {
		op, data, next, ok := NextReplayed(rest)
		if !ok {
			t.Fatalf("replayed: malformed at %q", rest)
		}
		msgs = append(msgs, append([]byte{op}, data...))
		rest = next
	}
	if !reflect.DeepEqual(msgs, [][]byte{[]byte("\x01one"), {2, 0, 1}}) {
		t.Errorf("replayed: got %q", msgs)
	}
	if _, _, _, ok := NextReplayed([]byte{1, 9, 0, 0, 0, 'x'}); ok {
		t.Errorf("a replayed message longer than its payload: parsed")
	}

	q := MembersQuery{Room: "r", After: 1 << 50, Limit: 100}
	if got, ok := ParseMembersQuery(q.Append(nil)); !ok || got != q {
		t.Errorf("members query: got %+v %v", got, ok)
	}
	h := History{Room: "r", Max: 100, TTLMillis: 300000}
	if got, ok := ParseHistory(h.Append(nil)); !ok || got != h {
		t.Errorf("history: got %+v %v", got, ok)
	}
	if _, ok := ParseHistory(bytes.Repeat([]byte{0}, 5)); ok {
		t.Errorf("a short history payload: parsed")
	}
}

// Missing nodes and member pages round trip.
func TestMissingAndPage(t *testing.T) {
	if got := ParseMissing(AppendMissing(nil, []int{2, 63})); len(got) != 2 || got[0] != 2 || got[1] != 63 {
		t.Fatalf("missing round trip: %v", got)
	}
	if ParseMissing(nil) != nil {
		t.Fatal("no missing nodes parsed as some")
	}
}
