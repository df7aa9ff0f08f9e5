package worker

import (
	"context"
	"fmt"
	"net"
	"os"

	"golang.org/x/sync/errgroup"

	"github.com/forkd/forkd/reactor"
)

// source is where a worker's connections come from: the one thing its two
// modes differ in (docs/architecture.md). A BASE worker runs its own
// reactor on the SO_REUSEPORT sockets the master handed down
// (reactorSource); a PROCESS worker, and every task worker and user
// process, serves what the master's reactor sends over ipc (ipcSource).
// The rest of the worker calls w.src without asking which mode runs.
type source interface {
	// serve starts accepting on the inherited listeners (g runs them).
	serve(g *errgroup.Group, listeners []*os.File) error
	// drain stops accepting and waits, until ctx ends, for the
	// connections to finish; close ends those left.
	drain(ctx context.Context)
	close()
	// count and infos describe the connections served here.
	count() int
	infos() []reactor.Info
}

// reactorSource: BASE mode, the worker's own reactor (w.r).
type reactorSource struct{ w *Worker }

func (s reactorSource) serve(g *errgroup.Group, listeners []*os.File) error {
	w := s.w
	for i, f := range listeners {
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("worker: listener %d: %w", i, err)
		}
		l := w.reactorListener(i)
		g.Go(func() error { return w.r.Serve(ln, l) })
	}
	return nil
}

func (s reactorSource) drain(ctx context.Context) {
	w := s.w
	w.r.Drain()
	if _, has := ctx.Deadline(); has && ctx.Err() == nil {
		if err := w.r.Wait(ctx); err != nil {
			w.log.Warn().Int("connections", w.r.Len()).Msg("drain deadline reached, closing connections")
		}
	}
}

func (s reactorSource) close()     { s.w.r.Close() }
func (s reactorSource) count() int { return s.w.r.Len() }

func (s reactorSource) infos() []reactor.Info {
	out := make([]reactor.Info, 0, s.w.r.Len())
	s.w.r.Each(func(c *reactor.Conn) { out = append(out, c.Info(s.w.cfg.Slot)) })
	return out
}

// ipcSource: the master's reactor holds the connections; their events
// arrive as frames (conn.go, process.go).
type ipcSource struct{ w *Worker }

func (ipcSource) serve(*errgroup.Group, []*os.File) error { return nil }
func (ipcSource) drain(context.Context)                   {}
func (ipcSource) close()                                  {}
func (ipcSource) infos() []reactor.Info                   { return nil }

func (s ipcSource) count() int {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return len(s.w.conns)
}
