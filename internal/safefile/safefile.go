// Package safefile opens and writes the files a server keeps in its run
// and log directories without following links planted there. Both the
// master and the workers use it.
package safefile

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// OpenNoFollow opens path (flags as os.OpenFile) without following a
// symbolic link in its last component, and only if it is a regular file
// with one name: a run dir or log directory others can write to must not
// turn the master's pid file or log into a write to some other file (a
// planted symlink or hard link to /etc/passwd, say). A file that exists
// with wider permissions than perm is narrowed to perm.
func OpenNoFollow(what, path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, perm)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s %s is a symbolic link: refusing to follow it", what, path)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("%s %s is not a regular file: refusing to use it", what, path)
	}
	if st.Nlink > 1 {
		f.Close()
		return nil, fmt.Errorf("%s %s has %d hard links: refusing to use it", what, path, st.Nlink)
	}
	if os.FileMode(st.Mode)&os.ModePerm&^perm != 0 && int(st.Uid) == os.Geteuid() {
		if err := f.Chmod(perm); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	return f, nil
}

// WriteFileAtomic writes b to path through a temporary file beside it,
// renamed over path: a reader sees the old or the new content, never a
// part. The temporary file is created afresh (O_EXCL, O_NOFOLLOW), so a
// link planted in its place is refused, never written through.
func WriteFileAtomic(path string, b []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
