package main

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// Conn.Send's outcome in each mode (docs/guide.md "Send's outcome"): in
// BASE mode Send's own error is final; in PROCESS mode Send does not wait
// for the master, and what only the master can see (the connection's send
// buffer is full, or it is gone) is reported by Conn.Flush. The built-in
// app's "__flood__ N SIZE" message on /echo sends N messages at once, then
// Flushes, and logs both outcomes ("flood done").

var floodLine = regexp.MustCompile(`flood done.*`)

// floodOutcomes returns the send_err and flush_err of every "flood done"
// line logged for connection id ("" : every connection).
func floodOutcomes(s *server, id string) (lines [][2]string) {
	field := func(line, name string) string {
		m := regexp.MustCompile(name + `=(\w+)`).FindStringSubmatch(line)
		if m == nil {
			return ""
		}
		return m[1]
	}
	for _, line := range floodLine.FindAllString(s.log(), -1) {
		if id != "" && !strings.Contains(line, "conn="+id) {
			continue
		}
		lines = append(lines, [2]string{field(line, "send_err"), field(line, "flush_err")})
	}
	return lines
}

// dialSmallBuffer opens /echo with a 16 KiB receive buffer on the client's
// socket, so what the server sends piles up in its own send buffer
// (--max-send-buffer) soon instead of in megabytes of kernel buffers.
func dialSmallBuffer(t *testing.T, addr string) *websocket.Conn {
	t.Helper()
	nd := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
		if err != nil {
			return err
		}
		return serr
	}}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		return nd.DialContext(ctx, network, a)
	}}
	c, resp, err := d.Dial("ws://"+addr+"/echo", nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("dial /echo: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSendOutcomeBufferFull: a connection that does not read is sent 12
// MiB at once with --max-send-buffer 256KiB. BASE mode: Send itself fails
// with ErrBufferFull and Flush has nothing to add. PROCESS mode: every Send
// returns nil (handed to the master), and Flush reports ErrBufferFull, the
// exact outcome the master saw. Either way the connection goes on: what was
// queued arrives, then an echo.
func TestSendOutcomeBufferFull(t *testing.T) {
	want := map[string][2]string{"process": {"ok", "buffer_full"}, "base": {"buffer_full", "ok"}}
	inModes(t, func(t *testing.T, mode string) {
		s := startServer(t, mode, 1, "--max-send-buffer", "256KiB")
		c := dialSmallBuffer(t, s.wsAddr)
		if err := c.WriteMessage(websocket.TextMessage, []byte("__flood__ 192 65536")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "the flood's outcome in the log", func() bool { return len(floodOutcomes(s, "")) == 1 })
		if got := floodOutcomes(s, "")[0]; got != want[mode] {
			t.Errorf("%s mode: send_err, flush_err = %v, want %v\n%s", mode, got, want[mode], floodLine.FindString(s.log()))
		}
		// The queued part arrives, then the echo of a later message: sent
		// again until one gets through (while the buffer is still full, an
		// echo fails with BufferFull like the flood's tail).
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				if c.WriteMessage(websocket.TextMessage, []byte("after")) != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		got := 0
		for {
			op, b, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("after %d flood messages: %v", got, err)
			}
			if op == websocket.TextMessage {
				if string(b) != "after" {
					t.Fatalf("got text %q, want the echo %q", b, "after")
				}
				break
			}
			got++
		}
		if got == 0 || got >= 192 {
			t.Errorf("received %d of the 192 flood messages, want some (those queued) and not all", got)
		}
	})
}

// TestSendRacingClose: a client asks for a flood and closes at once, in a
// loop, so Sends race the connection's close in the master (PROCESS) or
// the worker's reactor (BASE). Every flood must end (no Send or Flush
// hangs), with outcomes from the documented set for its mode, and the
// server goes on serving with the same workers.
func TestSendRacingClose(t *testing.T) {
	const rounds = 30
	allowed := map[string]struct{ send, flush map[string]bool }{
		// PROCESS: Send hands every message over to the master (a close
		// is never refused locally: OnClose's sends still go out); Flush
		// reports what the master saw.
		"process": {send: map[string]bool{"ok": true},
			flush: map[string]bool{"ok": true, "closed": true, "no_connection": true, "buffer_full": true}},
		// BASE: Send sees the reactor's state at once; Flush adds nothing.
		"base": {send: map[string]bool{"ok": true, "closed": true, "no_connection": true, "buffer_full": true},
			flush: map[string]bool{"ok": true}},
	}
	inModes(t, func(t *testing.T, mode string) {
		s := startServer(t, mode, 2, "--max-send-buffer", "64KiB")
		pids := s.workerPids()
		for i := 0; i < rounds; i++ {
			c := s.dial(s.wsAddr, "/echo")
			if err := c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("__flood__ %d 4096", 20+i*7))); err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 {
				c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
			}
			c.Close()
		}
		waitFor(t, 20*time.Second, fmt.Sprintf("%d floods logged as done", rounds), func() bool { return len(floodOutcomes(s, "")) >= rounds })
		for _, o := range floodOutcomes(s, "") {
			if a := allowed[mode]; !a.send[o[0]] || !a.flush[o[1]] {
				t.Errorf("%s mode: send_err=%s flush_err=%s, not an outcome this mode reports there", mode, o[0], o[1])
			}
		}
		c := s.dial(s.wsAddr, "/echo")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.ReadMessage(); err != nil || string(b) != "still here" {
			t.Fatalf("echo after the races: %q, %v", b, err)
		}
		if now := s.workerPids(); fmt.Sprint(now) != fmt.Sprint(pids) {
			t.Errorf("workers changed during the races: %v -> %v", pids, now)
		}
	})
}
