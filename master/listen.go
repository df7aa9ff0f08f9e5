package master

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/forkd/forkd/reactor"
)

// openListeners creates every listening socket before any worker starts,
// so a port in use is one clear error and no worker ever binds.
func (m *Master) openListeners() error {
	o := &m.opts
	m.addrs = make([]string, len(o.Listeners))
	if o.Mode == ModeProcess {
		for i, l := range o.Listeners {
			ln, err := net.Listen("tcp", l.Addr)
			if err != nil {
				m.closeListeners()
				return fmt.Errorf("listener %s: %w", l.Name, err)
			}
			m.plain = append(m.plain, ln)
			m.addrs[i] = ln.Addr().String()
		}
		m.backend = newProcBackend(m)
		m.reactor = reactor.New(reactor.Options{
			Node:           uint16(o.IDNode),
			Owner:          reactor.MasterOwner,
			Lease:          m.ids.lease,
			MaxPackageSize: o.MaxPackageSize,
			MaxSendBuffer:  o.MaxSendBuffer,
			MaxConns:       o.MaxConns,
			HeartbeatIdle:  o.HeartbeatIdle,
			ReadTimeout:    o.ReadTimeout,
			IdleTimeout:    o.IdleTimeout,
			Log:            m.log,
		}, m.backend)
		return nil
	}
	// BASE: one SO_REUSEPORT socket per worker slot and port. The first
	// socket of a port fixes its address (":0" picks a free port once).
	m.slotFiles = make([][]*os.File, o.Workers)
	for i, l := range o.Listeners {
		addr := l.Addr
		for s := 0; s < o.Workers; s++ {
			f, a, err := listenReusePort(addr)
			if err != nil {
				m.closeListeners()
				return fmt.Errorf("listener %s: %w", l.Name, err)
			}
			if s == 0 {
				addr = a.String()
				m.addrs[i] = addr
			}
			m.slotFiles[s] = append(m.slotFiles[s], f)
		}
	}
	return nil
}

func (m *Master) closeListeners() {
	var errs []error
	for _, ln := range m.plain {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, fs := range m.slotFiles {
		for _, f := range fs {
			errs = append(errs, f.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		m.log.Debug().Err(err).Msg("closing listeners")
	}
}

// serveReactor starts the PROCESS-mode reactor on every port.
func (m *Master) serveReactor() {
	for i, ln := range m.plain {
		l := m.opts.Listeners[i]
		p := reactor.HTTP
		if l.Protocol == "websocket" {
			p = reactor.WebSocket
		}
		rl := &reactor.Listener{Name: l.Name, Index: i, Protocol: p, Upgrade: l.Upgrade}
		go func() {
			if err := m.reactor.Serve(ln, rl); err != nil {
				m.log.Error().Err(err).Str("listener", l.Name).Msg("listener failed")
			}
		}()
	}
	m.plain = nil // the reactor owns and closes them now
}
