package master

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/worker"
)

// Fakes for the supervisor's seam (osproc.go): workers that speak the real
// ipc over the very pipes spawn made (their fd 3 and 4), run as goroutines,
// and a clock the test moves.

// fakeScript is how one fake worker incarnation behaves.
type fakeScript struct {
	failStart string // send this start error instead of Ready, then exit 1
	hang      bool   // never get ready; only a kill ends it
	crash     bool   // exit 1 right after Ready
	retire    bool   // ask to be replaced (--max-request reached) right after Ready
}

// fakeStarter starts fake workers; script decides each one's behaviour
// from its slot and its incarnation number for that slot (0: the first).
type fakeStarter struct {
	t      *testing.T
	script func(slot, n int) fakeScript

	mu      sync.Mutex
	started map[int][]*fakeProc // by slot
	nextPid int
}

func newFakeStarter(t *testing.T, script func(slot, n int) fakeScript) *fakeStarter {
	return &fakeStarter{t: t, script: script, started: map[int][]*fakeProc{}, nextPid: 1 << 20}
}

// dup duplicates f's descriptor into a pollable File: spawn closes its
// copy once the "child" has started, as the real parent does.
func dup(f *os.File, name string) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.Dup(int(fd)) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	return ipc.PipeFile(uintptr(nfd), name)
}

func (s *fakeStarter) start(spec procSpec) (osProcess, error) {
	in, err := dup(spec.Files[0], "fake-in")
	if err != nil {
		return nil, err
	}
	out, err := dup(spec.Files[1], "fake-out")
	if err != nil {
		in.Close()
		return nil, err
	}
	s.mu.Lock()
	slot := slotOf(spec)
	n := len(s.started[slot])
	s.nextPid++
	p := &fakeProc{pid: s.nextPid, slot: slot, in: in, out: out, done: make(chan struct{}), script: s.script(slot, n)}
	for _, q := range s.started[slot] {
		p.overlapped = p.overlapped || !q.exited()
	}
	s.started[slot] = append(s.started[slot], p)
	s.mu.Unlock()
	go p.run()
	return p, nil
}

// slotOf reads the slot from the start-up configuration spawn hands the
// worker in its environment, as a real worker does.
func slotOf(spec procSpec) int {
	for _, e := range spec.Env {
		if v, ok := strings.CutPrefix(e, worker.EnvConfig+"="); ok {
			var c worker.Config
			if json.Unmarshal([]byte(v), &c) == nil {
				return c.Slot
			}
		}
	}
	return -1
}

// count is how many processes were started for slot.
func (s *fakeStarter) count(slot int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.started[slot])
}

func (s *fakeStarter) proc(slot, n int) *fakeProc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started[slot][n]
}

// all returns every fake started.
func (s *fakeStarter) all() []*fakeProc {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ps []*fakeProc
	for _, l := range s.started {
		ps = append(ps, l...)
	}
	return ps
}

// fakeProc is one fake worker process.
type fakeProc struct {
	pid, slot  int
	in, out    *os.File
	script     fakeScript
	killed     atomic.Bool
	overlapped bool // started while an earlier process of its slot still ran
	drained    atomic.Bool
	crashNow   chan struct{}
	done       chan struct{}
	err        error
	closeOnce  sync.Once
}

func (p *fakeProc) Pid() int { return p.pid }

// Kill ends the fake at once: its pipes close (the master reads EOF) and
// Wait reports a kill.
func (p *fakeProc) Kill() error {
	p.killed.Store(true)
	p.closeFiles()
	return nil
}

func (p *fakeProc) Wait() error {
	<-p.done
	return p.err
}

func (p *fakeProc) closeFiles() {
	p.closeOnce.Do(func() {
		p.in.Close()
		p.out.Close()
	})
}

// exited reports whether the fake has ended.
func (p *fakeProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// run speaks the worker's side of the handshake, then answers frames until
// it is drained, killed, or crashes as scripted.
func (p *fakeProc) run() {
	code := p.serve()
	p.closeFiles()
	switch {
	case p.killed.Load():
		p.err = errors.New("signal: killed")
	case code != 0:
		p.err = fmt.Errorf("exit status %d", code)
	}
	close(p.done)
}

func (p *fakeProc) serve() int {
	w := ipc.NewWriter(p.out, 1<<20)
	go w.Run()
	defer func() {
		w.Close()
		<-w.Done()
	}()
	rd := ipc.NewReader(p.in, ipc.MaxPayload)
	hello := binary.LittleEndian.AppendUint16(nil, ipc.Version)
	hello = binary.LittleEndian.AppendUint32(hello, uint32(p.pid))
	hello = binary.LittleEndian.AppendUint16(hello, uint16(p.slot))
	if w.Send(&ipc.Header{Type: ipc.TypeHello, Arg: uint32(p.slot)}, hello, nil) != nil {
		return 1
	}
	for _, want := range []ipc.Type{ipc.TypeWelcome, ipc.TypeSecrets} {
		f, err := rd.Next()
		if err != nil || f.Type != want {
			return 1
		}
	}
	switch {
	case p.script.failStart != "":
		w.Send(&ipc.Header{Type: ipc.TypeError}, []byte(p.script.failStart), nil)
		return 1
	case p.script.hang:
		for {
			if _, err := rd.Next(); err != nil { // read and ignore, up to the kill
				return 1
			}
		}
	}
	if w.Send(&ipc.Header{Type: ipc.TypeReady}, nil, nil) != nil {
		return 1
	}
	if p.script.crash {
		return 1
	}
	if p.script.retire {
		w.Send(&ipc.Header{Type: ipc.TypeRetire}, nil, nil)
	}
	for {
		f, err := rd.Next()
		if err != nil {
			return 1 // the master went away
		}
		switch f.Type {
		case ipc.TypeDrain:
			p.drained.Store(true)
			return 0
		case ipc.TypeStats, ipc.TypeConns:
			w.Send(&ipc.Header{Type: f.Type, Seq: f.Seq}, []byte("{}"), nil)
		case ipc.TypePing: // the master's watchdog
			w.Send(&ipc.Header{Type: ipc.TypePong, Seq: f.Seq}, nil, nil)
		}
		rd.Shrink()
	}
}

// fakeClock is a clock the test moves with Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	d       time.Duration // as asked for
	at      time.Time
	ch      chan time.Time
	fn      func()
	stopped bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) add(d time.Duration, fn func()) *fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, d: d, at: c.now.Add(d), ch: make(chan time.Time, 1), fn: fn}
	c.timers = append(c.timers, t)
	return t
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time { return c.add(d, nil).ch }

func (c *fakeClock) AfterFunc(d time.Duration, f func()) stopper { return c.add(d, f) }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	t.c.drop(t)
	return was
}

func (c *fakeClock) drop(t *fakeTimer) {
	for i, x := range c.timers {
		if x == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			return
		}
	}
}

// Advance moves the clock by d and fires what falls due, in order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			due = append(due, t)
		}
	}
	for _, t := range due {
		t.stopped = true
		c.drop(t)
	}
	now := c.now
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		if t.fn != nil {
			go t.fn()
		} else {
			t.ch <- now
		}
	}
}

// waitTimer waits until a timer asked for with duration d is pending (a
// func timer if fn), and fails the test after a few seconds.
func (c *fakeClock) waitTimer(t *testing.T, d time.Duration, fn bool) {
	t.Helper()
	eventually(t, fmt.Sprintf("a pending %s timer (func %v)", d, fn), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, x := range c.timers {
			if x.d == d && (x.fn != nil) == fn {
				return true
			}
		}
		return false
	})
}

// funcTimers returns the durations of the pending func timers.
func (c *fakeClock) funcTimers() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ds []time.Duration
	for _, x := range c.timers {
		if x.fn != nil {
			ds = append(ds, x.d)
		}
	}
	return ds
}

// eventually polls cond for up to 10 seconds (a loaded machine).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
