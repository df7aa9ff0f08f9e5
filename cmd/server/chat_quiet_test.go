package main

import (
	"testing"
	"time"
)

// TestChatQuietMember: a /chat?quiet=1 member is in its room (broadcasts
// and room traffic reach it, POST /broadcast counts it) but its join and
// leave are not announced and it gets no roster: what lets bench's
// broadcast scenario fill one room with 100,000 members.
func TestChatQuietMember(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, mode, 2)
			const room = "quiet"
			members := chatRoom(t, s, s.wsAddr, room, 2)
			q := joinChat(t, s, s.wsAddr, room, "q&quiet=1")
			late := joinChat(t, s, s.wsAddr, room, "late")
			// q gets room traffic: late's join.
			q.waitUntil(t, 10*time.Second, "late's join", func(seen []string) bool {
				for _, e := range events(seen, "join") {
					if e.Name == "late" {
						return true
					}
				}
				return false
			})
			resp, body := s.post("/broadcast?room="+room, "to all")
			if resp.StatusCode != 200 || body != "4" {
				t.Fatalf("POST /broadcast: got %d %q, want 200 \"4\" (two members, q, late)", resp.StatusCode, body)
			}
			for _, m := range append(members, q, late) {
				m.waitUntil(t, 10*time.Second, "the /broadcast body", func(seen []string) bool { return contains(seen, "to all") })
			}
			q.c.Close()
			late.c.Close()
			for _, m := range members {
				m.waitUntil(t, 10*time.Second, "late's leave", func(seen []string) bool {
					for _, e := range events(seen, "leave") {
						if e.Name == "late" {
							return true
						}
					}
					return false
				})
			}
			time.Sleep(200 * time.Millisecond) // a stray announcement of q would be in by now
			for _, m := range append(members, late) {
				m.waitUntil(t, time.Second, "no announcement of q", func(seen []string) bool {
					for _, typ := range []string{"join", "leave", "member"} {
						for _, e := range events(seen, typ) {
							if e.Name == "q" {
								t.Fatalf("%s got a %s event for the quiet member", m.name, typ)
							}
						}
					}
					return true
				})
			}
			q.waitUntil(t, time.Second, "no roster", func(seen []string) bool {
				if ev := events(seen, "member"); len(ev) > 0 {
					t.Fatalf("the quiet member got a roster: %+v", ev)
				}
				return true
			})
		})
	}
}
