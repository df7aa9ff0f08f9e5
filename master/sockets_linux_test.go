package master

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReusePortNotPolled: a BASE-mode listening socket the master holds
// for its workers is non-blocking (the workers' accept must not block)
// but not in the master's poller, which would wake the master, which
// never accepts on it, at every connection a worker accepts. The check
// reads the process's epoll instances from /proc.
func TestReusePortNotPolled(t *testing.T) {
	f, _, err := listenReusePort("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_NONBLOCK == 0 {
		t.Fatal("the listening socket is blocking: a worker's accept would block in the kernel")
	}
	polled, epolls, err := inEpoll(fd)
	if err != nil {
		t.Fatal(err)
	}
	if epolls == 0 {
		t.Fatal("no epoll instance found in /proc/self/fd: the check would prove nothing")
	}
	if polled {
		t.Fatalf("fd %d is in the master's poller: every connection accepted by a worker would wake the master", fd)
	}
}

// inEpoll reports whether fd is registered in one of this process's epoll
// instances, and how many there are.
func inEpoll(fd int) (bool, int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return false, 0, err
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || target != "anon_inode:[eventpoll]" {
			continue
		}
		n++
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", e.Name()))
		if err != nil {
			return false, n, fmt.Errorf("fdinfo of epoll fd %s: %w", e.Name(), err)
		}
		for _, line := range strings.Split(string(info), "\n") {
			fields := strings.Fields(line)
			if len(fields) >= 2 && fields[0] == "tfd:" {
				if v, err := strconv.Atoi(fields[1]); err == nil && v == fd {
					return true, n, nil
				}
			}
		}
	}
	return false, n, nil
}
