package main

import (
	"fmt"
	"testing"
)

// TestUsersPacedReplay, in both modes on one server, twice: a replay of
// 160 KB through a 64 KiB send buffer arrives whole, in order, without a
// gap, then the live messages (paced as the buffer drains, the room's
// broadcasts meanwhile held back and sent after it).
func TestUsersPacedReplay(t *testing.T) {
	for _, mode := range []string{"base", "process"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--room-history", "100", "--max-send-buffer", "64KiB")
			for round := 0; round < 2; round++ {
				bigReplay(t, s, s, "paced", fmt.Sprintf("p%d", round), fmt.Sprintf("%s round %d", mode, round))
			}
		})
	}
}
