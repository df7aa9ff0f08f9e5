package worker

import (
	"os"

	"github.com/forkd/forkd/internal/safefile"
)

// OpenNoFollow opens path without following a planted link
// (safefile.OpenNoFollow).
func OpenNoFollow(what, path string, flag int, perm os.FileMode) (*os.File, error) {
	return safefile.OpenNoFollow(what, path, flag, perm)
}

// WriteFileAtomic writes path through a temporary file renamed over it
// (safefile.WriteFileAtomic).
func WriteFileAtomic(path string, b []byte, perm os.FileMode) error {
	return safefile.WriteFileAtomic(path, b, perm)
}
