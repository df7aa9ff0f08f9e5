package master

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/forkd/forkd/reactor"
)

// TestIDLeasesSurviveRestart: leases never overlap within a run, and a
// master started again in the same run dir (a restart, or a master killed
// by SIGKILL) hands out only leases above every lease of the run before,
// so no id of the old run names a connection of the new one.
func TestIDLeasesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	var highest uint64
	seen := map[uint64]bool{}
	for run := 0; run < 3; run++ {
		a, err := newIDAllocator(dir, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		first := true
		for i := 0; i < 300; i++ { // past the reservation written at the start
			s, err := a.lease()
			if err != nil {
				t.Fatal(err)
			}
			if s == 0 || s%reactor.IDLease != 0 || s+reactor.IDLease > reactor.MaxSeq+1 {
				t.Fatalf("run %d: lease %d is not an aligned lease inside the sequence space", run, s)
			}
			if seen[s] {
				t.Fatalf("run %d: lease %d handed out twice", run, s)
			}
			if first && run > 0 && s <= highest {
				t.Fatalf("run %d: first lease %d is not above the last run's highest %d", run, s, highest)
			}
			first = false
			seen[s] = true
			highest = max(highest, s)
		}
		// The process dies here without a word: only the file remains.
	}
}

// TestIDLeasesFromClock: with no file, the counter starts from the clock,
// later starts higher, and every lease id of any owner fits in 53 bits.
func TestIDLeasesFromClock(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	a, b := clockSeed(t0), clockSeed(t0.Add(time.Hour))
	if a == 0 || b <= a {
		t.Errorf("clockSeed: got %d then %d an hour later, want growing and non-zero", a, b)
	}
	for _, owner := range []uint16{0, 1, reactor.MasterOwner - 1, reactor.MasterOwner} {
		if id := reactor.MakeID(0, owner, alignLease(reactor.MaxSeq)+reactor.IDLease-1); id >= 1<<53 {
			t.Errorf("owner %d: id %d not below 2^53", owner, id)
		}
	}
	if got := alignLease(reactor.MaxSeq); got != reactor.IDLease {
		t.Errorf("alignLease past the end: got %d, want a wrap to %d", got, reactor.IDLease)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, IDsName), []byte("not a number\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// From today's clock, not t0's: the seed wraps around 2^27 s (four
	// years) after 2026, and a machine's clock may be anywhere.
	floor := clockSeed(time.Now())
	c, err := newIDAllocator(dir, zerolog.Nop())
	if err != nil {
		t.Fatalf("a corrupt %s: %v, want a start from the clock", IDsName, err)
	}
	if s, _ := c.lease(); s < floor {
		t.Errorf("a corrupt %s: first lease %d, want from the clock (>= %d)", IDsName, s, floor)
	}
}

// TestIDScatter: two counters started in fresh run dirs in the same clock
// second hand out the same leases; scattered (an unjoined cluster node), they
// differ, and every lease stays aligned inside the sequence space, the
// scatter wrapping around its end.
func TestIDScatter(t *testing.T) {
	a, _ := newIDAllocator(t.TempDir(), zerolog.Nop())
	b, _ := newIDAllocator(t.TempDir(), zerolog.Nop())
	b.next, b.reserved = a.next, a.reserved // as from the same clock second
	a.scatter()
	b.scatter()
	la, _ := a.lease()
	lb, _ := b.lease()
	if la == lb {
		t.Fatalf("two scattered counters handed out the same lease %d", la)
	}
	for i := 0; i < 1000; i++ {
		a.scatter()
		s, err := a.lease()
		if err != nil || s == 0 || s%reactor.IDLease != 0 || s+reactor.IDLease > reactor.MaxSeq+1 {
			t.Fatalf("after a scatter: lease %d (%v) is not an aligned lease inside the sequence space", s, err)
		}
	}
}
