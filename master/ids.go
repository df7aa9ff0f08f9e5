package master

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/forkd/forkd/internal/safefile"
	"github.com/forkd/forkd/reactor"
)

// IDsName is the run-dir file where the master keeps how far it has
// reserved connection-id sequences, so that a restarted server never issues
// an id its previous run did.
const IDsName = "server.ids"

// idReserve is how far ahead of the leases handed out the file reserves:
// one small write per 256 leases.
const idReserve = 256 * reactor.IDLease

// idAllocator hands out connection-id sequence leases (reactor.IDLease
// sequences each) from one counter that only grows: each owner incarnation
// (a BASE worker, the PROCESS-mode master's reactor) gets leases no other
// incarnation ever had, which is what makes a stale id fail (see
// reactor.MakeID). The counter survives a restart through IDsName; with no
// file (a first start, a new run dir) it starts from the clock, ahead of
// what an earlier run would plausibly have used.
type idAllocator struct {
	mu       sync.Mutex
	path     string // "": keep nothing (tests)
	next     uint64 // first sequence of the next lease
	reserved uint64 // the file says leases below this may have been handed out
	log      zerolog.Logger
}

// clockSeed is where a counter with no file starts: 1024 sequences per
// second since 2026 (a server that accepted fewer connections than that on
// average in its life cannot have reached it), modulo the sequence space.
func clockSeed(now time.Time) uint64 {
	secs := now.Unix() - 1767225600 // 2026-01-01
	if secs < 0 {
		secs = 0
	}
	return alignLease(uint64(secs) << 10)
}

// alignLease rounds seq up to a lease boundary within the sequence space,
// never to 0 (id 0 means "no connection").
func alignLease(seq uint64) uint64 {
	seq = (seq + reactor.IDLease - 1) &^ (reactor.IDLease - 1)
	if seq+reactor.IDLease > reactor.MaxSeq+1 || seq == 0 {
		seq = reactor.IDLease
	}
	return seq
}

func newIDAllocator(runDir string, log zerolog.Logger) (*idAllocator, error) {
	a := &idAllocator{log: log}
	if runDir == "" {
		a.next = reactor.IDLease
		a.reserved = a.next
		return a, nil
	}
	a.path = filepath.Join(runDir, IDsName)
	b, err := os.ReadFile(a.path)
	switch {
	case err == nil:
		v, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil {
			log.Warn().Err(perr).Str("file", a.path).Msg("unreadable connection id reservation; starting from the clock")
			v = clockSeed(time.Now())
		}
		a.next = alignLease(v)
	case os.IsNotExist(err):
		a.next = clockSeed(time.Now())
	default:
		return nil, fmt.Errorf("master: %w", err)
	}
	a.reserved = a.next
	return a, nil
}

// scatter moves the counter forward by a random number of leases, up to
// half the sequence space (wrapping around), for a cluster node that
// starts before it has a node number (NATS unreachable): its ids carry
// node 0 until it joins, like those of every other node in that state, and
// two such nodes started from the same clock second would issue the same
// ids (one's push to the other's connection would then reach its own
// connection of that id). After a scatter the ids of two unjoined nodes
// coincide with a probability of about 2^-20 per lease; the price is that
// this one start may reissue an id an earlier run issued (the counter no
// longer only grows), also with a probability of about 2^-20 per lease.
func (a *idAllocator) scatter() {
	a.mu.Lock()
	defer a.mu.Unlock()
	leases := uint64((reactor.MaxSeq + 1) / reactor.IDLease)
	n := (a.next/reactor.IDLease + 1 + rand.Uint64N(leases/2)) % leases
	if n == 0 {
		n = 1
	}
	a.next = n * reactor.IDLease
	a.reserved = a.next // the next lease writes the file
}

// lease returns the first sequence of a fresh lease.
func (a *idAllocator) lease() (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next+reactor.IDLease > reactor.MaxSeq+1 {
		a.log.Warn().Msg("connection id sequences wrapped around (2^37 handed out)")
		a.next = reactor.IDLease
		a.reserved = a.next
	}
	start := a.next
	a.next += reactor.IDLease
	if a.next > a.reserved && a.path != "" {
		mark := a.next + idReserve
		if mark > reactor.MaxSeq {
			mark = reactor.MaxSeq
		}
		if err := writeFileAtomic(a.path, []byte(strconv.FormatUint(mark, 10)+"\n")); err != nil {
			// The ids are still unique in this run; only a restart could
			// reuse them. Say so, and go on.
			a.log.Error().Err(err).Msg("cannot record the connection id reservation")
		}
		a.reserved = mark
	}
	return start, nil
}

func writeFileAtomic(path string, b []byte) error {
	return safefile.WriteFileAtomic(path, b, 0o644)
}
