package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// TestUsersBindCloseRace, in both modes: users of three /chat?uid=
// connections, each also dialling a connection that it closes as soon as
// its welcome arrives (while the server's Open may still be binding its
// uid), as the bench's uid-push scenario does to spread users over the
// workers. Whatever the interleaving, a push to the user must then reach
// exactly its three open connections, and once they close the user is
// offline. Many users at once, for many rounds: the race is a matter of
// timing.
func TestUsersBindCloseRace(t *testing.T) {
	const rounds, users = 6, 12
	for _, mode := range []string{"base", "process"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2)
			for round := 0; round < rounds; round++ {
				var wg sync.WaitGroup
				errs := make(chan error, users)
				for u := 0; u < users; u++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := bindCloseUser(s, fmt.Sprintf("race-%s-%d-%d", mode, round, u)); err != nil {
							errs <- err
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Errorf("round %d: %v", round, err)
				}
				if t.Failed() {
					return
				}
			}
		})
	}
}

// bindCloseUser opens uid's connections (the second of four closed at
// its welcome), checks a push reaches the three open ones, closes them and
// checks the user goes offline.
func bindCloseUser(s *server, uid string) error {
	path := "/chat?room=" + uid + "&name=" + uid + "&uid=" + uid
	var open []*websocket.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := 0; i < 4; i++ {
		c, err := s.dialErr(s.wsAddr, path)
		if err != nil {
			return fmt.Errorf("%s: dial %d: %w", uid, i, err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.ReadMessage()
		var w chatMsg
		if err != nil || json.Unmarshal(b, &w) != nil || w.Type != "welcome" {
			c.Close()
			return fmt.Errorf("%s: connection %d: got %q (%v), want a welcome", uid, i, b, err)
		}
		if i == 1 {
			c.Close() // at the welcome: Open may still be binding the uid
			continue
		}
		open = append(open, c)
	}
	if got := waitPushCount(s, uid, "3", 10*time.Second); got != "3" {
		return fmt.Errorf("%s: POST /push?uid= reached %q of its 3 open connections (after 10s)", uid, got)
	}
	for _, c := range open {
		c.Close()
	}
	open = nil
	if got := waitPushCount(s, uid, "404", 10*time.Second); got != "404" {
		return fmt.Errorf("%s: POST /push?uid= after all its connections closed: got %q, want 404 (offline)", uid, got)
	}
	return nil
}

// waitPushCount POSTs /push?uid=uid until the answer (the count reached,
// or the status when not 200) is want, or limit passes; it returns the
// last answer.
func waitPushCount(s *server, uid, want string, limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for {
		got := "error"
		resp, err := httpClient.Post("http://"+s.httpAddr+"/push?uid="+uid, "text/plain", strings.NewReader("x"))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got = string(b)
			if resp.StatusCode != http.StatusOK {
				got = fmt.Sprint(resp.StatusCode)
			}
		}
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}
