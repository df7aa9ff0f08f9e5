package master

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/ipc"
)

func TestOpenNoFollow(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	hard := filepath.Join(dir, "hard")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	wide := filepath.Join(dir, "wide")
	if err := os.WriteFile(wide, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(wide, 0o666); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path string
		setup      func()
		want       string      // in the error; "" for success
		perm       os.FileMode // on success
	}{
		// A new file gets the mode asked for less the umask (a CI runner's
		// may be 077); a wider one is narrowed to the mode asked for.
		{name: "new file", path: filepath.Join(dir, "new"), perm: 0o640 &^ umask(t)},
		{name: "existing wide file is narrowed", path: wide, perm: 0o640},
		{name: "symlink", path: link, want: "is a symbolic link: refusing to follow it"},
		// A FIFO with no reader fails to open (ENXIO, thanks to O_NONBLOCK:
		// never a hang); with a reader it would be "not a regular file".
		{name: "fifo", path: fifo, want: "log file"},
		{name: "hard link", path: hard, setup: func() {
			if err := os.Link(target, hard); err != nil {
				t.Fatal(err)
			}
		}, want: "hard links"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			f, err := OpenNoFollow("log file", tc.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want an error containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want the file opened", err)
			}
			defer f.Close()
			st, _ := f.Stat()
			if st.Mode().Perm() != tc.perm {
				t.Errorf("got mode %04o, want %04o", st.Mode().Perm(), tc.perm)
			}
		})
	}
	if b, _ := os.ReadFile(target); string(b) != "keep\n" {
		t.Errorf("the link target: got %q, want it untouched", b)
	}
}

// umask returns the process's umask, from /proc (syscall.Umask would set
// it, for a moment, under the package's parallel tests).
func umask(t *testing.T) os.FileMode {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				t.Fatalf("Umask line %q: %v", l, err)
			}
			return os.FileMode(m)
		}
	}
	t.Fatal("no Umask line in /proc/self/status")
	return 0
}

func TestCheckRunDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the check applies to root only")
	}
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o755, true}, {0o700, true}, {0o775, true}, {0o777, false}, {0o1777, false}} {
		dir := t.TempDir()
		if err := os.Chmod(dir, tc.mode); err != nil {
			t.Fatal(err)
		}
		err := CheckRunDir(dir)
		if (err == nil) != tc.ok {
			t.Errorf("mode %04o: got %v, want ok=%v", tc.mode, err, tc.ok)
		}
	}
}

// TestBroadcastSum: a BASE broadcast answers the origin once with the sum
// of every holder's reached and skipped counts, or with what arrived when
// the wait runs out.
func TestBroadcastSum(t *testing.T) {
	answer := func(t *testing.T, sum func(*broadcastSum)) (reached uint32, skipped int) {
		t.Helper()
		r, out := pipeWriter(t)
		s := &broadcastSum{left: 2, origin: &proc{out: out}, seq: 7, tail: ipc.BroadcastResult{Seq: 41, Epoch: 9}}
		sum(s)
		r.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := ipc.NewReader(r, ipc.MaxPayload).Next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type != ipc.TypeResult || f.Seq != 7 || len(f.Payload) != ipc.BroadcastResultSize {
			t.Fatalf("got frame type %d seq %d payload %d bytes, want a Result for seq 7 with %d", f.Type, f.Seq, len(f.Payload), ipc.BroadcastResultSize)
		}
		if res := ipc.ParseBroadcastResult(f.Payload); res.Seq != 41 || res.Epoch != 9 {
			t.Fatalf("got seq %d epoch %d, want the message's 41 and 9", res.Seq, res.Epoch)
		}
		return f.Arg, int(binary.LittleEndian.Uint32(f.Payload))
	}
	t.Run("all answer", func(t *testing.T) {
		reached, skipped := answer(t, func(s *broadcastSum) {
			s.add(3, 1)
			s.add(2, 0)
			s.add(9, 9) // late or duplicate: ignored
		})
		if reached != 5 || skipped != 1 {
			t.Errorf("got reached %d skipped %d, want 5 and 1", reached, skipped)
		}
	})
	t.Run("one never answers", func(t *testing.T) {
		reached, skipped := answer(t, func(s *broadcastSum) {
			s.add(4, 2)
			s.finish() // what the wait's timer does
		})
		if reached != 4 || skipped != 2 {
			t.Errorf("got reached %d skipped %d, want 4 and 2", reached, skipped)
		}
	})
}
