package master

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenReusePort opens a TCP listening socket with SO_REUSEPORT, so that
// several sockets (one per worker slot) share the port and the kernel
// spreads connections across them.
func listenReusePort(addr string) (*os.File, net.Addr, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	// Not TCPListener.File: os/exec hands ExtraFiles over with File.Fd,
	// and Fd on a File from package net puts the descriptor in blocking
	// mode. The socket's file description is shared with every worker of
	// the slot, so each spawn would leave the serving workers' accept
	// blocked in the kernel, where closing their listener (drain) hangs
	// until a connection arrives. A File made by os.NewFile on an
	// already non-blocking descriptor is left as it is.
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("master: listener file: %w", err)
	}
	nfd, derr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, nil, fmt.Errorf("master: listener file: %w", err)
	}
	if derr != nil {
		return nil, nil, fmt.Errorf("master: listener file: %w", derr)
	}
	// Not in the master's poller: os.NewFile registers a non-blocking
	// descriptor there, and the master, which never accepts on it, was
	// woken by every connection the workers accepted (an edge on the
	// listening socket each; in a connection storm, several thousand
	// wake-ups a second and some 4 us of the master's CPU per connect).
	// So the File is made while the socket is blocking, then the socket
	// is non-blocking again, for the workers; nobody accepts on it yet.
	if err := unix.SetNonblock(nfd, false); err != nil {
		unix.Close(nfd)
		return nil, nil, fmt.Errorf("master: listener file: %w", err)
	}
	f := os.NewFile(uintptr(nfd), "reuseport "+ln.Addr().String())
	if err := unix.SetNonblock(nfd, true); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("master: listener file: %w", err)
	}
	return f, ln.Addr(), nil
}

// raiseNoFile lifts the soft open-files limit to the hard one and returns
// the soft limit reached (0: unknown).
func raiseNoFile() uint64 {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
		return 0
	}
	if rl.Cur < rl.Max {
		want := rl.Max
		rl.Cur = rl.Max
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
			_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
			if rl.Cur < want {
				return rl.Cur
			}
		}
	}
	return rl.Cur
}

// checkNoFile raises the open-files limit (workers inherit it) and says
// so in one log line when it stays below what max_conn asks for: past
// it, accept fails (EMFILE) and connections wait in the backlog.
func (m *Master) checkNoFile() {
	lim := raiseNoFile()
	if lim > 0 && m.opts.MaxConns > 0 && lim < uint64(m.opts.MaxConns) {
		m.log.Warn().Int("max_conn", m.opts.MaxConns).Uint64("open_files", lim).
			Msg("master: the open-files limit (RLIMIT_NOFILE, raised to its hard limit) is below max_conn: connections past it wait in the backlog; raise the hard limit (ulimit -Hn, LimitNOFILE)")
	}
}

// RaiseNoFile lifts the soft open-files limit to the hard one and returns it.
func RaiseNoFile() uint64 { return raiseNoFile() }

// peerUID returns the uid of the process at the other end of a unix socket.
func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	err = raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

// rss returns a process's resident set size in bytes (0 if unknown).
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0
	}
	var size, res int64
	if _, err := fmt.Sscan(string(b), &size, &res); err != nil {
		return 0
	}
	return res * int64(os.Getpagesize())
}
