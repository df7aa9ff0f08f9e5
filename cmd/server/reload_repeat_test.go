package main

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReloadBackToBack: reloads one after another, and two at once, under
// keep-alive HTTP and WebSocket load, in both modes. No request fails, and
// every drained worker's ipc stream ends when the worker exits: on the old
// code the master's reader of that stream missed the EOF when the worker's
// last frames and its exit came together (one edge in the poller for
// both), waited 2 s of silence, then closed it with "worker exited but its
// ipc stream did not end" and an "ipc stream closed" error, on about one
// reload step in five under load (each such step 2 s longer, a stop or a
// crash's respawn too).
func TestReloadBackToBack(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--task-workers", "1")
			ws := startEchoClients(t, s, 8, mode == "base")
			load := startKeepAliveLoad(t, s.httpAddr, "/hello", 16)
			waitFor(t, 10*time.Second, "load to run", func() bool { return load.ok.Load() > 100 && ws.echoed.Load() > 8 })
			for i := 0; i < 6; i++ {
				if out, err := s.run("reload"); err != nil {
					t.Fatalf("reload %d: %v\n%s", i, err, out)
				}
			}
			var wg sync.WaitGroup
			for i := 0; i < 2; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if out, err := s.run("reload"); err != nil {
						t.Errorf("reload at once %d: %v\n%s", i, err, out)
					}
				}()
			}
			wg.Wait()
			n := load.ok.Load()
			waitFor(t, 10*time.Second, "requests after the reloads", func() bool { return load.ok.Load() > n+100 })
			load.check(t)
			ws.check(t)
			log := s.log()
			for _, bad := range []string{"ipc stream did not end", "file already closed"} {
				if c := strings.Count(log, bad); c > 0 {
					t.Errorf("%d reloads: the log says %q %d times, want 0 (a worker's exit missed by the reader of its stream)", 8, bad, c)
				}
			}
			checkNoRace(t, s)
		})
	}
}
