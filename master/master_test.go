package master

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestNewRefusesBadOptions(t *testing.T) {
	ok := Options{Mode: ModeProcess, Workers: 2}
	cases := []struct {
		name string
		edit func(*Options)
		want string // in the error; "" for no error
	}{
		{name: "valid", edit: func(*Options) {}},
		{name: "unknown mode", edit: func(o *Options) { o.Mode = "thread" }, want: `unknown mode "thread"`},
		{name: "no workers", edit: func(o *Options) { o.Workers = 0 }, want: "at least 1"},
		{name: "negative task workers", edit: func(o *Options) { o.TaskWorkers = -1 }, want: "task-workers"},
		{name: "unknown dispatch", edit: func(o *Options) { o.Dispatch = "random" }, want: `unknown dispatch mode "random"`},
		{name: "package over an ipc frame", edit: func(o *Options) { o.MaxPackageSize = MaxProcessPackage + 1 }, want: "max-package-size"},
		{name: "base mode has no frame limit", edit: func(o *Options) { o.Mode, o.MaxPackageSize = ModeBase, MaxProcessPackage+1 }},
		{name: "negative worker timeout", edit: func(o *Options) { o.WorkerTimeout = -1 }, want: "worker-timeout"},
		{name: "negative request timeout", edit: func(o *Options) { o.RequestTimeout = -1 }, want: "request-timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			_, err := New(o)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestPidFile: the lock, not the file, says a master runs; a stale file
// (its master died) never blocks a start.
func TestPidFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadPid(dir); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("ReadPid on an empty dir: got %v, want ErrNotRunning", err)
	}
	unlock, err := takePidFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pid, err := ReadPid(dir); err != nil || pid != os.Getpid() {
		t.Fatalf("ReadPid while held: got %d, %v; want %d", pid, err, os.Getpid())
	}
	if _, err := takePidFile(dir); !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Fatalf("second takePidFile: got %v, want ErrRunning naming pid %d", err, os.Getpid())
	}
	unlock()
	if _, err := ReadPid(dir); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("ReadPid after unlock: got %v, want ErrNotRunning", err)
	}

	// A stale file, as a SIGKILLed master leaves it: present, unlocked.
	if err := os.WriteFile(filepath.Join(dir, PidName), []byte("999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPid(dir); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "stale") {
		t.Fatalf("ReadPid on a stale file: got %v, want ErrNotRunning (stale)", err)
	}
	unlock, err = takePidFile(dir)
	if err != nil {
		t.Fatalf("takePidFile over a stale file: %v", err)
	}
	unlock()
}

// TestRoomCounts: a broadcast goes only to processes holding members, and
// a process's counts go with it.
func TestRoomCounts(t *testing.T) {
	var rc roomCounts
	a, b := &proc{}, &proc{}
	rc.set("lobby", a, 3)
	rc.set("lobby", b, 2)
	rc.set("other", b, 1)
	if ps, n := rc.holders("lobby"); len(ps) != 2 || n != 5 {
		t.Fatalf("lobby: got %d holders, %d members; want 2, 5", len(ps), n)
	}
	rc.set("lobby", a, 0)
	if ps, n := rc.holders("lobby"); len(ps) != 1 || ps[0] != b || n != 2 {
		t.Fatalf("lobby after a left: got %v, %d; want [b], 2", ps, n)
	}
	rc.forget(b)
	for _, room := range []string{"lobby", "other"} {
		if ps, n := rc.holders(room); len(ps) != 0 || n != 0 {
			t.Fatalf("%s after b is gone: got %d holders, %d members; want none", room, len(ps), n)
		}
	}
}

func TestParseDispatch(t *testing.T) {
	for in, want := range map[string]Dispatch{"": DispatchFD, "fd": DispatchFD, "round-robin": DispatchRoundRobin, "ip": DispatchIP, "idle": DispatchIdle} {
		if got, err := ParseDispatch(in); err != nil || got != want {
			t.Errorf("ParseDispatch(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseDispatch("random"); err == nil || !strings.Contains(err.Error(), `unknown dispatch mode "random"`) {
		t.Errorf("ParseDispatch(random): %v", err)
	}
}
