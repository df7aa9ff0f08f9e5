package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// waitReady polls GET /hello and a WebSocket /echo handshake until both
// work, then (for the real server) `status --json` until every worker is
// listed.
func (t *target) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for t.unbound() {
		if err := t.exited(); err != nil {
			return err
		}
		if last = t.readBound(ctx); last == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: server in mode %s did not become ready in %v: %w%s", t.mode, limit, last, t.stderrTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		if err := t.exited(); err != nil {
			return err
		}
		if last = probe(ctx, t); last == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: server in mode %s did not become ready in %v: %w%s", t.mode, limit, last, t.stderrTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if t.mode == modeBaseline || t.mode == modeNginx || t.inProcess {
		return nil
	}
	for {
		st, err := t.status(ctx)
		if err == nil && len(st.Workers) >= t.workers {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("status lists %d of %d workers", len(st.Workers), t.workers)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: server in mode %s did not become ready in %v: %w", t.mode, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unbound reports whether the target's addresses are still the port 0
// it was started with.
func (t *target) unbound() bool {
	return strings.HasSuffix(t.httpAddr, ":0") || strings.HasSuffix(t.wsAddr, ":0")
}

// readBound learns the addresses the target's listeners were bound to: the
// baseline prints them (baselineLine), the server reports them in
// `status --json`.
func (t *target) readBound(ctx context.Context) error {
	if t.mode == modeBaseline {
		b, err := os.ReadFile(t.errPath)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			var h, w string
			if n, _ := fmt.Sscanf(l+"\n", baselineLine, &h, &w); n == 2 {
				t.httpAddr, t.wsAddr = h, w
				return nil
			}
		}
		return errors.New("no address line from the baseline yet")
	}
	st, err := t.status(ctx)
	if err != nil {
		return err
	}
	for _, l := range st.Listeners {
		if l.Name == t.httpListener {
			t.httpAddr = l.Addr
		}
		if l.Name == t.wsListener {
			t.wsAddr = l.Addr
		}
	}
	if t.unbound() {
		return fmt.Errorf("status lists no bound address for listener %q or %q", t.httpListener, t.wsListener)
	}
	return nil
}

// probe checks both listeners once.
func probe(ctx context.Context, t *target) error {
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	hc, err := dialHTTP(pctx, t.httpAddr)
	if err != nil {
		return err
	}
	_ = hc.c.SetDeadline(time.Now().Add(time.Second))
	// Any answer means the server is up; whether it serves what the
	// scenarios need is preflight's question.
	_, err = hc.do(httpGet(t.httpAddr, t.httpPath), false)
	hc.Close()
	if err != nil {
		return fmt.Errorf("GET %s: %w", t.httpPath, err)
	}
	if t.wsAddr != t.httpAddr {
		c, err := dialTCP(pctx, t.wsAddr)
		if err != nil {
			return fmt.Errorf("ws listener: %w", err)
		}
		c.Close()
	}
	return nil
}
