package forkd

import (
	"errors"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/master"
)

// Errors returned by bus operations; test them with errors.Is.
var (
	ErrNoConnection = errors.New("forkd: no such connection")
	ErrClosed       = errors.New("forkd: connection closed")
	ErrBufferFull   = errors.New("forkd: send buffer full")
	ErrTimeout      = errors.New("forkd: timed out")
	ErrTooLarge     = errors.New("forkd: message too large")
	ErrUnavailable  = errors.New("forkd: unavailable")
	ErrTaskFailed   = errors.New("forkd: task failed")
)

// Errors of the operator commands, as the master answers them over its
// control socket (a code beside the text): test them with errors.Is.
var (
	ErrNotRunning     = master.ErrNotRunning     // no server runs in the run dir
	ErrRunning        = master.ErrRunning        // a server already runs in the run dir
	ErrReloadFailed   = master.ErrReloadFailed   // a reload stopped (a replacement failed to start, ...)
	ErrCertificates   = master.ErrCertificates   // new certificates refused; those in use stay
	ErrStopping       = master.ErrStopping       // the server is stopping
	ErrReopenLogs     = master.ErrReopenLogs     // reopening the log files failed
	ErrUnknownCommand = master.ErrUnknownCommand // the master does not know the command
	ErrPermission     = master.ErrPermission     // the control socket refused the caller
)

func outcomeErr(o ipc.Outcome) error {
	switch o {
	case ipc.OK:
		return nil
	case ipc.NoConnection:
		return ErrNoConnection
	case ipc.Closed:
		return ErrClosed
	case ipc.BufferFull:
		return ErrBufferFull
	case ipc.Timeout:
		return ErrTimeout
	case ipc.TooLarge:
		return ErrTooLarge
	case ipc.Unavailable:
		return ErrUnavailable
	default:
		return ErrTaskFailed
	}
}
