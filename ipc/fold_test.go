package ipc

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// TestWriterFold: Fold merges into the last frame only while it is still
// pending, only for the named types and connection, and adds to its arg;
// the frames around it are untouched and keep their order.
func TestWriterFold(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out, 0)
	send := func(h Header, p string) {
		t.Helper()
		if err := w.Send(&h, []byte(p), nil); err != nil {
			t.Fatal(err)
		}
	}
	if w.Fold(7, TypeSend, TypeSendCredit, 1) {
		t.Fatal("Fold on an empty queue reported true")
	}
	send(Header{Type: TypeSend, Conn: 7, Flags: 1}, "a")
	if w.Fold(8, TypeSend, TypeSendCredit, 1) {
		t.Fatal("Fold for another connection reported true")
	}
	if w.Fold(7, TypeMessage, TypeSendCredit, 1) {
		t.Fatal("Fold into a frame of another type reported true")
	}
	if !w.Fold(7, TypeSend, TypeSendCredit, 2) || !w.Fold(7, TypeSend, TypeSendCredit, 3) {
		t.Fatal("Fold into the pending Send of the same connection reported false")
	}
	send(Header{Type: TypeSend, Conn: 7, Flags: 2}, "b")
	send(Header{Type: TypeCredit, Conn: 7, Arg: 1}, "")
	if w.Fold(7, TypeSend, TypeSendCredit, 1) {
		t.Fatal("Fold past a frame that is not a Send reported true")
	}
	w.Close()
	if err := w.Run(); err != nil {
		t.Fatal(err)
	}
	if w.Fold(7, TypeSend, TypeSendCredit, 1) {
		t.Fatal("Fold after the queue was written reported true")
	}
	rd := NewReader(&out, 0)
	want := []struct {
		typ   Type
		flags uint8
		arg   uint32
		p     string
	}{{TypeSendCredit, 1, 5, "a"}, {TypeSend, 2, 0, "b"}, {TypeCredit, 0, 1, ""}}
	for i, wf := range want {
		f, err := rd.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.Type != wf.typ || f.Flags != wf.flags || f.Arg != wf.arg || f.Conn != 7 || string(f.Payload) != wf.p {
			t.Errorf("frame %d: type %d flags %d arg %d conn %d payload %q, want type %d flags %d arg %d conn 7 payload %q",
				i, f.Type, f.Flags, f.Arg, f.Conn, f.Payload, wf.typ, wf.flags, wf.arg, wf.p)
		}
	}
	if _, err := rd.Next(); err == nil {
		t.Error("a frame more than sent")
	}
}

// TestWriterLead: the lead runs ahead of the first frame of each batch
// (a frame queued while nothing is pending), and only then.
func TestWriterLead(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out, 0)
	owed := uint32(0)
	w.SetLead(func(dst []byte) []byte {
		if owed == 0 {
			return dst
		}
		dst = AppendFrame(dst, &Header{Type: TypeSendAck, Arg: owed}, nil, nil)
		owed = 0
		return dst
	})
	owed = 3
	w.Send(&Header{Type: TypeMessage, Conn: 1}, []byte("a"), nil)
	owed = 4 // counted after the batch began: waits for the next batch
	w.Send(&Header{Type: TypeMessage, Conn: 2}, []byte("b"), nil)
	done := make(chan error, 1)
	go func() { done <- w.Run() }()
	for w.Pending() > 0 {
		time.Sleep(time.Millisecond)
	}
	w.Send(&Header{Type: TypePing, Seq: 9}, nil, nil)
	w.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rd := NewReader(&out, 0)
	want := []string{"112/3", "13/0", "13/0", "112/4", "51/0"}
	var got []string
	for {
		f, err := rd.Next()
		if err != nil {
			break
		}
		got = append(got, fmt.Sprintf("%d/%d", f.Type, f.Arg))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("frames (type/arg): %v, want %v", got, want)
	}
}
