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
	m.passed = passedSockets()
	if err := m.checkPassed(m.passed); err != nil {
		return err
	}
	return m.mode.open()
}

// openProcess opens PROCESS mode's listeners: the master's reactor holds
// them all.
func (m *Master) openProcess() error {
	o := &m.opts
	for i, l := range o.Listeners {
		var ln net.Listener
		var err error
		switch files := m.passed[l.Name]; len(files) {
		case 0:
			ln, err = net.Listen("tcp", l.Addr)
		case 1:
			ln, err = passedListener(l.Name, files[0])
			if err == nil {
				m.log.Info().Str("listener", l.Name).Str("addr", ln.Addr().String()).Msg("listener passed by systemd: not binding")
			}
		default:
			err = fmt.Errorf("systemd passed %d sockets named %q; PROCESS mode takes one per listener", len(files), l.Name)
		}
		if err != nil {
			m.closeListeners()
			return fmt.Errorf("listener %s: %w", l.Name, err)
		}
		m.plain = append(m.plain, ln)
		m.addrs[i] = ln.Addr().String()
	}
	m.backend = newProcBackend(m)
	m.reactor = reactor.New(reactor.Options{
		Node:           uint16(m.node()),
		Owner:          reactor.MasterOwner,
		Lease:          m.ids.lease,
		MaxPackageSize: o.MaxPackageSize,
		MaxSendBuffer:  o.MaxSendBuffer,
		MaxConns:       o.MaxConns,
		HeartbeatIdle:  o.HeartbeatIdle,
		ReadTimeout:    o.ReadTimeout,
		IdleTimeout:    o.IdleTimeout,
		AllowedOrigins: o.AllowedOrigins,
		PerIP:          m.processPerIP(),
		Log:            m.log,
		Metrics:        &m.ops.proc,
	}, m.backend)
	return nil
}

// openBase opens BASE mode's listeners: one SO_REUSEPORT socket per worker
// slot and port, which the workers hold.
func (m *Master) openBase() error {
	o := &m.opts
	// BASE: one SO_REUSEPORT socket per worker slot and port. The first
	// socket of a port fixes its address (":0" picks a free port once).
	m.slotFiles = make([][]*os.File, o.Workers)
	for i, l := range o.Listeners {
		if files := m.passed[l.Name]; len(files) > 0 {
			if err := m.basePassed(i, files); err != nil {
				m.closeListeners()
				return fmt.Errorf("listener %s: %w", l.Name, err)
			}
			continue
		}
		addr := l.Addr
		if err := probeFree(addr); err != nil {
			m.closeListeners()
			return fmt.Errorf("listener %s: %w", l.Name, err)
		}
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

// probeFree fails when addr is already in use by anyone: SO_REUSEPORT
// would let a second server (any process of the same user) join the port
// and have the kernel split the traffic between them. So before the
// reuseport sockets are made, the address is bound once without
// SO_REUSEPORT, which fails exactly as PROCESS mode's listener does.
// Port 0 picks a port nobody holds, and needs no probe.
func probeFree(addr string) error {
	if _, port, err := net.SplitHostPort(addr); err == nil && (port == "0" || port == "") {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return ln.Close()
}

func (m *Master) closeListeners() {
	var errs []error
	for _, ln := range m.plain {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	closed := map[*os.File]bool{} // a passed socket may serve every slot
	for _, fs := range m.slotFiles {
		for _, f := range fs {
			if !closed[f] {
				closed[f] = true
				errs = append(errs, f.Close())
			}
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
		rl := &reactor.Listener{Name: l.Name, Index: i, Protocol: reactor.ProtocolOf(l.Protocol), Upgrade: l.Upgrade, TLS: m.reactorTLS(i)}
		m.goJoin(func() {
			if err := m.reactor.Serve(ln, rl); err != nil {
				m.log.Error().Err(err).Str("listener", l.Name).Msg("listener failed")
			}
		})
	}
	m.plain = nil // the reactor owns and closes them now
	m.goJoin(m.sweepRequests)
}

// processPerIP is PROCESS mode's --max-conn-per-ip: the master holds every
// connection, so one exact count.
func (m *Master) processPerIP() reactor.IPLimiter {
	if m.opts.MaxConnPerIP <= 0 {
		return nil
	}
	return reactor.NewIPCounter(m.opts.MaxConnPerIP)
}

// basePassed gives BASE-mode worker slots the sockets systemd passed for
// listener i. One socket: every worker accepts on it (one accept queue
// shared by all, as nginx without reuseport; SO_REUSEPORT plays no part, so
// the kernel does not spread connections evenly, but none is refused and a
// reload never closes the port). As many sockets as workers (several
// .socket units with ReusePort=yes and one FileDescriptorName=): one per
// worker, the kernel spreading connections as with our own sockets. Any
// other count cannot be shared out fairly and is refused.
func (m *Master) basePassed(i int, files []*os.File) error {
	o := &m.opts
	name := o.Listeners[i].Name
	if len(files) != 1 && len(files) != o.Workers {
		for _, f := range files {
			f.Close()
		}
		return fmt.Errorf("systemd passed %d sockets named %q for %d BASE-mode workers: pass 1 (shared by every worker) or %d (one each, ReusePort=yes)", len(files), name, o.Workers, o.Workers)
	}
	for _, f := range files {
		ln, err := net.FileListener(f) // a dup, to check the socket and read its address
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return fmt.Errorf("master: socket activation: socket %q: %w (want a listening TCP socket, ListenStream=)", name, err)
		}
		m.addrs[i] = ln.Addr().String()
		ln.Close()
	}
	for s := 0; s < o.Workers; s++ {
		f := files[0]
		if len(files) == o.Workers {
			f = files[s]
		}
		m.slotFiles[s] = append(m.slotFiles[s], f)
	}
	m.log.Info().Str("listener", name).Str("addr", m.addrs[i]).Int("sockets", len(files)).Msg("listener passed by systemd: not binding")
	return nil
}
