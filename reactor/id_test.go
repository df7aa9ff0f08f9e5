package reactor

import (
	"math"
	"testing"
)

// TestBusConnIDEncoding: an id carries owner, epoch and sequence, survives
// its decimal form, and a stale id (same owner and sequence, an earlier
// incarnation) never equals a live one.
func TestBusConnIDEncoding(t *testing.T) {
	tests := []struct {
		name  string
		owner uint16
		epoch uint16
		seq   uint32
	}{
		{name: "first", owner: 0, epoch: 1, seq: 1},
		{name: "worker 1", owner: 1, epoch: 7, seq: 42},
		{name: "master reactor", owner: MasterOwner, epoch: 3, seq: 99},
		{name: "max", owner: math.MaxUint16, epoch: math.MaxUint16, seq: math.MaxUint32},
		{name: "zero", owner: 0, epoch: 0, seq: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := MakeID(tc.owner, tc.epoch, tc.seq)
			if got := Owner(id); got != tc.owner {
				t.Errorf("Owner: got %d, want %d", got, tc.owner)
			}
			if got := Epoch(id); got != tc.epoch {
				t.Errorf("Epoch: got %d, want %d", got, tc.epoch)
			}
			if got := uint32(id); got != tc.seq {
				t.Errorf("sequence: got %d, want %d", got, tc.seq)
			}
			s := FormatID(id)
			back, err := ParseID(s)
			if err != nil || back != id {
				t.Errorf("ParseID(FormatID(%#x) = %q): got %#x, %v; want the id back", id, s, back, err)
			}
		})
	}
	live := MakeID(1, 2, 5)
	for _, stale := range []uint64{MakeID(1, 1, 5), MakeID(0, 2, 5), MakeID(1, 2, 4)} {
		if stale == live {
			t.Errorf("id %#x (owner %d epoch %d) equals the live id %#x", stale, Owner(stale), Epoch(stale), live)
		}
	}
	// The layout is part of the contract: the owner is the top 16 bits.
	if got, want := MakeID(0x1234, 0x5678, 0x9abcdef0), uint64(0x123456789abcdef0); got != want {
		t.Errorf("MakeID layout: got %#x, want %#x", got, want)
	}
	for _, bad := range []string{"", "abc", "-1", "18446744073709551616", "1.5", " 1"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q): got no error", bad)
		}
	}
}
