package master

import (
	"fmt"
	"os"
	"syscall"

	"github.com/forkd/forkd/internal/safefile"
)

// OpenNoFollow opens a pid or log file without following a planted link
// (see safefile.OpenNoFollow).
func OpenNoFollow(what, path string, flag int, perm os.FileMode) (*os.File, error) {
	return safefile.OpenNoFollow(what, path, flag, perm)
}

// CheckRunDir refuses, when running as root, a run dir that users other
// than root may write to: whoever can write there can plant links for the
// pid file, the log or the control socket.
func CheckRunDir(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("run dir: %w", err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	perm := st.Mode().Perm()
	if sys.Uid != 0 || perm&0o002 != 0 || (perm&0o020 != 0 && sys.Gid != 0) {
		return fmt.Errorf("run dir %s is writable by users other than root (owner uid %d, mode %04o): refusing to run as root there; chmod go-w it, or choose another --run-dir", dir, sys.Uid, perm)
	}
	return nil
}
