package reactor

import (
	"errors"
	"testing"
)

// TestBusConnIDLayout pins the id layout (it crosses processes and reaches
// users' databases and JavaScript): node 6 bits, owner 10, sequence 37, 53
// in all, so that every id of every kind of owner is below 2^53.
func TestBusConnIDLayout(t *testing.T) {
	pins := []struct {
		name      string
		got, want uint64
	}{
		{"NodeBits", NodeBits, 6},
		{"OwnerBits", OwnerBits, 10},
		{"SeqBits", SeqBits, 37},
		{"IDBits", IDBits, 53},
		{"MasterOwner", MasterOwner, 1023},
		{"MaxNode", MaxNode, 63},
		{"MaxID", MaxID, 1<<53 - 1},
		{"IDLease", IDLease, 65536},
		{"MakeID(1, 2, 3)", MakeID(1, 2, 3), 1<<47 | 2<<37 | 3},
		{"MakeID(0x2a, 0x155, 0x123456789)", MakeID(0x2a, 0x155, 0x123456789), 0x2a<<47 | 0x155<<37 | 0x123456789},
	}
	for _, p := range pins {
		if p.got != p.want {
			t.Errorf("%s: got %#x, want %#x", p.name, p.got, p.want)
		}
	}
}

// TestBusConnIDEncoding: an id carries node, owner and sequence, survives
// its decimal form, and is below 2^53 for every kind of owner (the
// PROCESS-mode master, every BASE worker slot) on every node.
func TestBusConnIDEncoding(t *testing.T) {
	tests := []struct {
		name  string
		node  uint16
		owner uint16
		seq   uint64
	}{
		{name: "first", node: 0, owner: 0, seq: 1},
		{name: "base worker 1", node: 0, owner: 1, seq: 42},
		{name: "last base worker slot", node: 0, owner: MasterOwner - 1, seq: MaxSeq},
		{name: "process master", node: 0, owner: MasterOwner, seq: 99},
		{name: "process master, last sequence", node: 0, owner: MasterOwner, seq: MaxSeq},
		{name: "cluster node 5 master", node: 5, owner: MasterOwner, seq: 7},
		{name: "last node, base worker", node: MaxNode, owner: 3, seq: MaxSeq},
		{name: "max", node: MaxNode, owner: MasterOwner, seq: MaxSeq},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := MakeID(tc.node, tc.owner, tc.seq)
			if id >= 1<<53 {
				t.Errorf("id %d is not below 2^53", id)
			}
			if got := Node(id); got != tc.node {
				t.Errorf("Node: got %d, want %d", got, tc.node)
			}
			if got := Owner(id); got != tc.owner {
				t.Errorf("Owner: got %d, want %d", got, tc.owner)
			}
			if got := Seq(id); got != tc.seq {
				t.Errorf("Seq: got %d, want %d", got, tc.seq)
			}
			if f := float64(id); uint64(f) != id {
				t.Errorf("id %d does not survive a float64 (a JavaScript Number): %v", id, f)
			}
			s := FormatID(id)
			back, err := ParseID(s)
			if err != nil || back != id {
				t.Errorf("ParseID(FormatID(%#x) = %q): got %#x, %v; want the id back", id, s, back, err)
			}
		})
	}
	if MakeID(MaxNode, MasterOwner, MaxSeq) != MaxID {
		t.Errorf("the largest id is not MaxID")
	}
	for _, bad := range []string{"", "abc", "-1", "9007199254740992", "18446744073709551615", "18446744073709551616", "1.5", " 1"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q): got no error", bad)
		}
	}
}

// TestBusIDLeases: a reactor's ids come from its leases in order, a new
// lease is asked for exactly when one is used up, 0 is never an id, and a
// failed lease is an error (the connection is refused), not a reused id.
func TestBusIDLeases(t *testing.T) {
	var asked []uint64
	leases := []uint64{0, 5 * IDLease}
	s := idSource{lease: func() (uint64, error) {
		if len(leases) == 0 {
			return 0, errors.New("master gone")
		}
		l := leases[0]
		leases = leases[1:]
		asked = append(asked, l)
		return l, nil
	}}
	seen := map[uint64]bool{}
	for i := 0; i < 2*IDLease-1; i++ {
		seq, err := s.take()
		if err != nil {
			t.Fatalf("take %d: %v", i, err)
		}
		if seq == 0 || seen[seq] {
			t.Fatalf("take %d: got %d (zero or repeated)", i, seq)
		}
		seen[seq] = true
	}
	if len(asked) != 2 {
		t.Fatalf("leases asked: got %v, want 2", asked)
	}
	if _, err := s.take(); !errors.Is(err, ErrNoIDs) {
		t.Fatalf("take with no lease left: got %v, want ErrNoIDs", err)
	}
	// A reactor given a first lease issues its ids without asking.
	r := New(Options{Owner: 3, FirstLease: 7 * IDLease}, &roomRecorder{last: map[string]int{}})
	defer r.Close()
	c := fakeWS(t, r)
	if got, want := c.id, MakeID(0, 3, 7*IDLease); got != want {
		t.Errorf("first id: got %d, want %d", got, want)
	}
}
