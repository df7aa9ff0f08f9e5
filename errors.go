package forkd

import (
	"errors"

	"github.com/forkd/forkd/ipc"
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
	ErrServerClosed = errors.New("forkd: server closed")
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
