package main

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestReplacementNotDisturbed: pipe messages (each /chat join asks every
// other worker for its roster) and pushes keep flowing to a slot while its
// killed worker's replacement starts. None may reach the replacement
// before its Welcome and Secrets, or it fails to start ("unexpected frame
// 27 before welcome"), which a client could cause at will.
func TestReplacementNotDisturbed(t *testing.T) {
	s := startServer(t, "base", 2)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c, err := s.dialErr(s.wsAddr, "/chat?room=busy")
				if err == nil {
					c.SetReadDeadline(time.Now().Add(time.Second))
					c.ReadMessage()
					c.Close()
				}
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }()
	for i := 0; i < 5; i++ {
		// A worker up for 2s is not in a crash loop: its replacement
		// starts at once, no back-off.
		time.Sleep(2100 * time.Millisecond)
		old := s.workerPids()[0]
		if old == 0 {
			t.Fatalf("round %d: worker 0 not ready", i)
		}
		syscall.Kill(old, syscall.SIGKILL)
		waitFor(t, 30*time.Second, "worker 0 replaced", func() bool {
			pid, ok := s.workerPids()[0]
			return ok && pid != old
		})
	}
	if log := s.log(); strings.Contains(log, "before welcome") || strings.Contains(log, "failed to start") {
		t.Fatalf("a replacement failed to start:\n%s", log)
	}
}
