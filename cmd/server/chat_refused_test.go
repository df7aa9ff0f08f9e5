package main

import (
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// TestChatInvalidRoom: a chat client that asks for a room name the API
// refuses (one starting with NUL, reserved) gets close 1008 (its own input,
// a policy violation), not 1011 (the server's failure); it is logged once,
// and the worker and the other clients carry on.
func TestChatInvalidRoom(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1)
		bystander := s.dial(s.wsAddr, "/echo")
		for range 2 {
			c := s.dial(s.wsAddr, "/chat?room=%00x&name=eve")
			expectCloseCode(t, c, websocket.ClosePolicyViolation, 5*time.Second)
			c.Close()
		}
		s.expectLogged(t, 2, "chat join refused")
		if got := s.countLog("chat join failed"); got != 0 {
			t.Fatalf("the refusal was also logged as a failure (%d lines)", got)
		}
		echoOK(t, bystander, "after")
		ok := s.dial(s.wsAddr, "/chat?room=fine&name=bob")
		ok.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, b, err := ok.ReadMessage(); err != nil {
			t.Fatalf("a valid chat join after the refusals: %v", err)
		} else if len(b) == 0 {
			t.Fatal("a valid chat join got an empty welcome")
		}
	})
}
