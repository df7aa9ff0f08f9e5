package master

import (
	"testing"

	"github.com/rs/zerolog"
)

// TestAwaitReadEnd: the reaper waits for an exited worker's stream to end
// while its reader still takes frames, and gives up only after a quiet
// readEndQuiet. A fixed 2 s wait closed a loaded master's stream in the
// middle of a drained worker's last responses.
func TestAwaitReadEnd(t *testing.T) {
	fc := newFakeClock()
	m := &Master{log: zerolog.Nop()}
	p := &proc{slot: &slot{}, readEnd: make(chan struct{})}

	returned := make(chan struct{})
	go func() {
		m.awaitReadEnd(p, fc.After)
		close(returned)
	}()
	for i := 0; i < 3; i++ { // progress in every period: keeps waiting
		fc.waitTimer(t, readEndQuiet, false)
		p.readN.Add(5)
		fc.Advance(readEndQuiet)
		select {
		case <-returned:
			t.Fatalf("gave up after period %d although the stream made progress", i+1)
		default:
		}
	}
	fc.waitTimer(t, readEndQuiet, false) // a quiet period: gives up
	fc.Advance(readEndQuiet)
	eventually(t, "awaitReadEnd to give up after a quiet period", func() bool {
		select {
		case <-returned:
			return true
		default:
			return false
		}
	})

	// The stream's end returns at once.
	p2 := &proc{slot: &slot{}, readEnd: make(chan struct{})}
	close(p2.readEnd)
	m.awaitReadEnd(p2, fc.After)
}
