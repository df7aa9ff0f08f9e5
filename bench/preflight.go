package bench

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// preflight checks once, before any load, that the server serves what each
// chosen scenario needs, so that a program that does not (a user's own,
// with other paths) is refused at once with what is missing rather than
// with a timeout or a column of errors.
func preflight(ctx context.Context, o *Options, t *target) error {
	pick := func(names ...string) []string {
		var out []string
		for _, n := range names {
			if slices.Contains(o.Scenarios, n) {
				out = append(out, n)
			}
		}
		return out
	}
	if len(pick(ScenarioHTTP)) > 0 {
		if err := probeHTTP(ctx, t); err != nil {
			return fmt.Errorf("bench: scenario http needs a GET path answering 200 (listener %s, path %s): %w; "+
				"give it with --http-path and --http-listener, or leave http out of --scenarios", o.HTTPListener, o.HTTPPath, err)
		}
	}
	if ws := pick(ScenarioEcho, ScenarioConnect, ScenarioIdle); len(ws) > 0 {
		if err := probeEcho(ctx, t); err != nil {
			return fmt.Errorf("bench: scenario %s needs a WebSocket path that sends every message back (listener %s, path %s): %w; "+
				"give it with --ws-path and --ws-listener, or leave %s out of --scenarios",
				strings.Join(ws, ", "), o.WSListener, o.WSPath, err, strings.Join(ws, ", "))
		}
	}
	if chat := pick(ScenarioPush, ScenarioUIDPush, ScenarioBroadcast, ScenarioClusterPush, ScenarioClusterBroadcast); len(chat) > 0 {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		m, err := joinChat(pctx, t.wsAddr, "bench-preflight", "bench")
		if err != nil {
			return fmt.Errorf("bench: scenario %s needs the built-in chat protocol (WebSocket /chat?room=R&name=N on listener %s whose first message is "+
				`{"type":"welcome","conn":ID,...}, POST /push?conn=ID and POST /broadcast?room=R on listener %s): %w; leave %s out of --scenarios`,
				strings.Join(chat, ", "), o.WSListener, o.HTTPListener, err, strings.Join(chat, ", "))
		}
		m.ws.Close()
	}
	return nil
}

// probeEcho sends one message on the WebSocket path and waits for it back.
func probeEcho(ctx context.Context, t *target) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ws, err := dialWS(pctx, t.wsAddr, t.wsPath)
	if err != nil {
		return err
	}
	defer ws.Close()
	want := []byte("forkd-bench-preflight")
	if err := ws.writeMessage(opText, want); err != nil {
		return err
	}
	_ = ws.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range 8 { // a greeting or two may come first
		if _, err := ws.readMessage(); err != nil {
			return fmt.Errorf("no echo: %w", err)
		}
		if bytes.Equal(ws.msg, want) {
			return nil
		}
	}
	return fmt.Errorf("no echo of what it was sent (got %q)", truncate(string(ws.msg), 60))
}

// probeHTTP does one GET of the HTTP path and wants a 200.
func probeHTTP(ctx context.Context, t *target) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	hc, err := dialHTTP(pctx, t.httpAddr)
	if err != nil {
		return err
	}
	defer hc.Close()
	_ = hc.c.SetDeadline(time.Now().Add(5 * time.Second))
	st, err := hc.do(httpGet(t.httpAddr, t.httpPath), false)
	if err != nil {
		return err
	}
	if st != 200 {
		return fmt.Errorf("GET %s answered %d", t.httpPath, st)
	}
	return nil
}
