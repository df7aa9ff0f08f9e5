package forkd

import (
	"fmt"

	"github.com/forkd/forkd/ipc"
)

func taskErr(res []byte, out ipc.Outcome) error {
	if out == ipc.Failed {
		return fmt.Errorf("%w: %s", ErrTaskFailed, res)
	}
	if out == ipc.Unavailable && len(res) > 0 {
		return fmt.Errorf("%w: %s", ErrUnavailable, res)
	}
	return outcomeErr(out)
}
