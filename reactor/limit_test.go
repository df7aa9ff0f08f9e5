package reactor

import (
	"net/netip"
	"testing"
)

func TestIPCounter(t *testing.T) {
	l := NewIPCounter(2)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	if !l.Acquire(a) || !l.Acquire(a) {
		t.Fatal("first two refused")
	}
	if l.Acquire(a) {
		t.Fatal("third admitted")
	}
	if !l.Acquire(b) {
		t.Fatal("another address refused")
	}
	l.Release(a)
	if !l.Acquire(a) {
		t.Fatal("not admitted after a release")
	}
}

// TestSharedIPCounter: two processes' counters over one table (here two
// mappings in one process) share the limit; clearing a dead one's row
// frees what it held.
func TestSharedIPCounter(t *testing.T) {
	const rows = 3
	f, err := NewSharedIPFile(rows)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w0, err := OpenSharedIPCounter(f, rows, 0, 3, 42)
	if err != nil {
		t.Fatal(err)
	}
	defer w0.Close()
	w1, _ := OpenSharedIPCounter(f, rows, 1, 3, 42)
	defer w1.Close()
	late, _ := OpenSharedIPCounter(f, rows, -1, 3, 42) // no row left: counts locally, reads all
	defer late.Close()
	master, _ := OpenSharedIPCounter(f, rows, -1, 3, 42)
	defer master.Close()

	a := netip.MustParseAddr("198.51.100.9")
	if !w0.Acquire(a) || !w0.Acquire(a) || !w1.Acquire(a) {
		t.Fatal("three connections across two workers refused")
	}
	if w1.Acquire(a) || w0.Acquire(a) || late.Acquire(a) {
		t.Fatal("a fourth admitted")
	}
	if !w1.Acquire(netip.MustParseAddr("198.51.100.10")) {
		t.Fatal("another address refused")
	}
	w0.Release(a)
	// A process without a row sees every row, and its own connections
	// (the others do not see its: the master never leaves a process
	// without a row, see master.security).
	if !late.Acquire(a) {
		t.Fatal("not admitted after a release")
	}
	if late.Acquire(a) {
		t.Fatal("late admitted over the limit")
	}
	late.Release(a)
	if !w1.Acquire(a) {
		t.Fatal("a third after late's release refused")
	}
	// w0 dies holding one: its row still counts until the master clears it.
	if w1.Acquire(a) {
		t.Fatal("over the limit")
	}
	master.ClearRow(0)
	if !w1.Acquire(a) {
		t.Fatal("the dead worker's row still counts after ClearRow")
	}
	// A Release of what was never acquired changes nothing.
	w0.Release(netip.MustParseAddr("203.0.113.1"))
}
