package reactor

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SharedBuckets is the number of counters per row of a shared per-address
// table (see SharedIPCounter).
const SharedBuckets = 1 << 16

// SharedIPCounter is an IPLimiter shared by BASE mode's workers, which
// each accept their own connections. A memory file (memfd) made by the
// master and inherited by every worker holds a table of atomic counters:
// one row per worker process, SharedBuckets counters per row. A process
// adds only to its own row (so the master can zero the row of a process
// that died, connections and all), and reads every row: the connections
// an address holds across the server are the sum over rows of its bucket.
// Each address has two buckets (two hashes with a per-server random seed)
// and the smaller sum counts, so two addresses must collide in both to
// share a count (a count-min sketch): a count is exact unless they do, and
// a collision can only over-count (refuse early), never admit more than
// the limit. Acquire adds first and checks after, so two workers
// admitting the same address at the same instant both see both, and at
// worst both refuse.
type SharedIPCounter struct {
	mem  []byte
	rows int
	row  int // this process's row; -1: none left, count here only
	max  int
	seed uint64

	mu    sync.Mutex
	local map[netip.Addr]int // what this process holds, exactly
}

// NewSharedIPFile creates the shared table for rows processes.
func NewSharedIPFile(rows int) (*os.File, error) {
	fd, err := unix.MemfdCreate("forkd-conn-per-ip", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("reactor: per-ip table: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "forkd-conn-per-ip")
	if err := f.Truncate(int64(rows * SharedBuckets * 4)); err != nil {
		f.Close()
		return nil, fmt.Errorf("reactor: per-ip table: %w", err)
	}
	return f, nil
}

// OpenSharedIPCounter maps the table f (of rows rows) and counts in row
// (-1: only locally), admitting max connections per address.
func OpenSharedIPCounter(f *os.File, rows, row, max int, seed uint64) (*SharedIPCounter, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, rows*SharedBuckets*4, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("reactor: per-ip table: mmap: %w", err)
	}
	if row >= rows {
		row = -1
	}
	return &SharedIPCounter{mem: mem, rows: rows, row: row, max: max, seed: seed, local: map[netip.Addr]int{}}, nil
}

// Close unmaps the table.
func (s *SharedIPCounter) Close() error { return unix.Munmap(s.mem) }

func (s *SharedIPCounter) cell(row, bucket int) *int32 {
	return (*int32)(unsafe.Pointer(&s.mem[(row*SharedBuckets+bucket)*4]))
}

// ClearRow zeroes a row: the master calls it once the process that
// counted there is gone, before the row is given to another.
func (s *SharedIPCounter) ClearRow(row int) {
	for b := 0; b < SharedBuckets; b++ {
		atomic.StoreInt32(s.cell(row, b), 0)
	}
}

func (s *SharedIPCounter) buckets(ip netip.Addr) (int, int) {
	a := ip.As16()
	h1 := fnv(s.seed, a[:])
	h2 := fnv(s.seed^0x9e3779b97f4a7c15, a[:])
	return int(h1 % SharedBuckets), int(h2 % SharedBuckets)
}

func fnv(seed uint64, b []byte) uint64 {
	h := uint64(14695981039346656037)
	var sb [8]byte
	binary.LittleEndian.PutUint64(sb[:], seed)
	for _, c := range append(sb[:], b...) {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func (s *SharedIPCounter) total(b int) int {
	n := 0
	for r := 0; r < s.rows; r++ {
		n += int(atomic.LoadInt32(s.cell(r, b)))
	}
	return n
}

// Acquire implements IPLimiter.
func (s *SharedIPCounter) Acquire(ip netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.row < 0 {
		b1, b2 := s.buckets(ip)
		if s.local[ip]+min(s.total(b1), s.total(b2)) >= s.max {
			return false
		}
		s.local[ip]++
		return true
	}
	b1, b2 := s.buckets(ip)
	atomic.AddInt32(s.cell(s.row, b1), 1)
	atomic.AddInt32(s.cell(s.row, b2), 1)
	if min(s.total(b1), s.total(b2)) > s.max {
		atomic.AddInt32(s.cell(s.row, b1), -1)
		atomic.AddInt32(s.cell(s.row, b2), -1)
		return false
	}
	s.local[ip]++
	return true
}

// Release implements IPLimiter.
func (s *SharedIPCounter) Release(ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.local[ip] <= 0 {
		return
	}
	if s.local[ip]--; s.local[ip] == 0 {
		delete(s.local, ip)
	}
	if s.row >= 0 {
		b1, b2 := s.buckets(ip)
		atomic.AddInt32(s.cell(s.row, b1), -1)
		atomic.AddInt32(s.cell(s.row, b2), -1)
	}
}

// Max implements IPLimiter.
func (s *SharedIPCounter) Max() int { return s.max }
