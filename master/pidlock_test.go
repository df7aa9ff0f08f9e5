package master

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestPidFileWhileStatusPolls: a start is not refused as "already running
// (pid ?)" because a status (ReadPid) held the pid file's shared lock at
// that instant. The harness polls status while a server starts; the full
// suite failed TestHardenSizes that way.
func TestPidFileWhileStatusPolls(t *testing.T) {
	dir := t.TempDir()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i := 0; i < 1; i++ { // one status in a loop, as the harness polls
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				ReadPid(dir)
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()
	for i := 0; i < 300; i++ {
		unlock, err := takePidFile(dir)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		unlock()
	}
}
