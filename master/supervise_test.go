package master

import (
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newSupervised starts a master's slots on fake workers and a fake clock:
// the supervisor's state machines, without its listeners, run dir or
// control socket. The test's cleanup stops it and checks every fake ended.
func newSupervised(t *testing.T, o Options, script func(slot, n int) fakeScript) (*Master, *fakeStarter, *fakeClock) {
	t.Helper()
	if o.Mode == "" {
		o.Mode = ModeProcess
	}
	o.Exe = "/nonexistent/forkd-fake-worker" // never executed: the fake starter runs goroutines
	o.Log = zerolog.Nop()
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	fs, fc := newFakeStarter(t, script), newFakeClock()
	m.starter, m.clock = fs, fc
	if err := m.openListeners(); err != nil { // none: PROCESS mode's backend and reactor, idle
		t.Fatal(err)
	}
	m.slots = m.newSlots()
	if err := m.startAll(); err != nil {
		t.Fatalf("startAll: %v", err)
	}
	t.Cleanup(func() {
		select {
		case <-m.done:
		default:
			stopNow(t, m, fc)
		}
		for _, p := range fs.all() {
			eventually(t, "every fake worker to end", p.exited)
		}
		joined := make(chan struct{})
		go func() {
			m.join() // every goroutine the master started ends
			close(joined)
		}()
		select {
		case <-joined:
		case <-time.After(10 * time.Second):
			t.Error("the master's goroutines did not end after its stop")
		}
	})
	return m, fs, fc
}

// stopNow runs a stop now to its end, moving the clock past any deadline.
func stopNow(t *testing.T, m *Master, fc *fakeClock) {
	t.Helper()
	go m.shutdown(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-m.done:
			return
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("stop did not end")
		}
		fc.Advance(time.Second)
	}
}

// slotState returns slot id's current and next process, under the lock.
func slotState(m *Master, id int) (cur, next *proc, failing string, backoff time.Duration, restarts int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sl := m.slots[id]
	return sl.cur, sl.next, sl.failing, sl.backoff, sl.restarts
}

// A worker that keeps dying young is respawned after a doubling back-off
// capped at 10s, its last exit shown as the slot's failure; one that stays
// up clears the failure, and its later death is replaced at once.
func TestSuperviseCrashLoopBacksOff(t *testing.T) {
	t.Parallel()
	const crashing = 7 // incarnations 1..7 die as soon as they are ready
	m, fs, fc := newSupervised(t, Options{Workers: 1}, func(slot, n int) fakeScript {
		return fakeScript{crash: n >= 1 && n <= crashing}
	})
	fs.proc(0, 0).Kill() // the first one dies: not asked to, so it is replaced
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, 1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond, 10 * time.Second}
	for i, d := range want {
		fc.waitTimer(t, d, true)
		if got := fc.funcTimers(); len(got) != 1 {
			t.Fatalf("exit %d: pending respawns %v, want exactly one", i, got)
		}
		_, _, failing, backoff, _ := slotState(m, 0)
		if backoff != d || (!strings.Contains(failing, "exit status 1") && !strings.Contains(failing, "killed")) {
			t.Fatalf("exit %d: backoff %s failing %q, want %s and the exit status", i, backoff, failing, d)
		}
		if n := fs.count(0); n != i+1 {
			t.Fatalf("exit %d: %d processes started before the back-off ended, want %d", i, n, i+1)
		}
		fc.Advance(d - time.Millisecond)
		time.Sleep(5 * time.Millisecond)
		if n := fs.count(0); n != i+1 {
			t.Fatalf("exit %d: respawned %d before its back-off of %s", i, n, d)
		}
		fc.Advance(time.Millisecond)
		eventually(t, "the respawn", func() bool { return fs.count(0) == i+2 })
	}
	last := fs.proc(0, crashing+1)
	eventually(t, "the survivor to serve with the failure cleared", func() bool {
		cur, _, failing, _, restarts := slotState(m, 0)
		return cur != nil && cur.pid == last.pid && cur.State() == StateReady && failing == "" && restarts == crashing+1
	})
	// Up longer than the crash-loop threshold: its death is replaced at once.
	fc.Advance(3 * time.Second)
	last.Kill()
	fc.waitTimer(t, 0, true)
	fc.Advance(0)
	eventually(t, "the immediate replacement", func() bool { return fs.count(0) == crashing+3 })
}

// A replacement that fails its start stops the reload; the old worker keeps
// serving, undrained, and the failed one is not respawned. The next reload
// succeeds.
func TestSuperviseReplacementFailsStart(t *testing.T) {
	t.Parallel()
	m, fs, _ := newSupervised(t, Options{Workers: 1, Reloadable: true}, func(slot, n int) fakeScript {
		if n == 1 {
			return fakeScript{failStart: "config: missing key"}
		}
		return fakeScript{}
	})
	old := fs.proc(0, 0)
	lines, err := m.Reload(false)
	if err == nil || !strings.Contains(err.Error(), "failed to become ready") || !strings.Contains(err.Error(), "config: missing key") ||
		!strings.Contains(err.Error(), "keeps serving") {
		t.Fatalf("reload: %v, want the replacement's start error", err)
	}
	if len(lines) != 0 {
		t.Fatalf("reload lines %+v, want none", lines)
	}
	cur, next, _, _, _ := slotState(m, 0)
	if cur == nil || cur.pid != old.pid || cur.State() != StateReady || next != nil || old.drained.Load() {
		t.Fatalf("after the failed reload: cur %+v next %v drained %v, want the old worker serving", cur, next, old.drained.Load())
	}
	if !fs.proc(0, 1).exited() {
		t.Fatal("the failed replacement still runs")
	}
	if got := m.ops.reloadsFailed.Load(); got != 1 {
		t.Fatalf("reloads failed %d, want 1", got)
	}
	lines, err = m.Reload(false)
	if err != nil || len(lines) != 1 || lines[0].OldPid != old.pid || lines[0].NewPid != fs.proc(0, 2).pid {
		t.Fatalf("second reload: %+v, %v; want old %d -> new %d", lines, err, old.pid, fs.proc(0, 2).pid)
	}
	eventually(t, "the old worker drained", old.exited)
	if !old.drained.Load() {
		t.Fatal("the old worker was not drained")
	}
	if n := len(clockOf(m).funcTimers()); n != 0 {
		t.Fatalf("%d respawns pending after reloads, want none", n)
	}
}

func clockOf(m *Master) *fakeClock { return m.clock.(*fakeClock) }

// A reload aborted midway: the slots before the failure run their
// replacements, the failing slot and those after it keep their workers.
func TestSuperviseReloadAbortedMidway(t *testing.T) {
	t.Parallel()
	m, fs, _ := newSupervised(t, Options{Workers: 3, Reloadable: true}, func(slot, n int) fakeScript {
		if slot == 1 && n == 1 {
			return fakeScript{failStart: "boom"}
		}
		return fakeScript{}
	})
	lines, err := m.Reload(false)
	if err == nil || !strings.Contains(err.Error(), "worker 1 failed to become ready") {
		t.Fatalf("reload: %v, want worker 1's failure", err)
	}
	if len(lines) != 1 || lines[0].ID != 0 || lines[0].NewPid != fs.proc(0, 1).pid {
		t.Fatalf("lines %+v, want slot 0 replaced only", lines)
	}
	for slot, want := range []*fakeProc{fs.proc(0, 1), fs.proc(1, 0), fs.proc(2, 0)} {
		if cur, _, _, _, _ := slotState(m, slot); cur == nil || cur.pid != want.pid || cur.State() != StateReady {
			t.Fatalf("slot %d serves %+v, want pid %d ready", slot, cur, want.pid)
		}
	}
	if n := fs.count(2); n != 1 {
		t.Fatalf("slot 2 started %d processes, want 1 (the reload stopped before it)", n)
	}
}

// A stop during a reload: the stop drains every process, kills the
// replacement that hangs in its start once the stop's deadline passes, the
// reload ends with an error, and nothing is respawned.
func TestSuperviseStopDuringReload(t *testing.T) {
	t.Parallel()
	m, fs, clk := newSupervised(t, Options{Workers: 2, Reloadable: true}, func(slot, n int) fakeScript {
		return fakeScript{hang: slot == 0 && n == 1}
	})
	reloadErr := make(chan error, 1)
	go func() {
		_, err := m.Reload(false)
		reloadErr <- err
	}()
	eventually(t, "the replacement to start", func() bool {
		_, next, _, _, _ := slotState(m, 0)
		return next != nil
	})
	stopped := make(chan struct{})
	go func() {
		m.shutdown(true)
		close(stopped)
	}()
	clk.waitTimer(t, m.opts.ReloadWait+2*time.Second, false) // the stop's deadline
	eventually(t, "the serving workers to drain", func() bool { return fs.proc(0, 0).exited() && fs.proc(1, 0).exited() })
	clk.Advance(m.opts.ReloadWait + 2*time.Second)
	select {
	case err := <-reloadErr:
		if err == nil || !strings.Contains(err.Error(), "failed to become ready") {
			t.Fatalf("reload: %v, want its replacement's failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reload did not end")
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the stop did not end")
	}
	if !fs.proc(0, 1).killed.Load() {
		t.Fatal("the hung replacement was not killed")
	}
	for _, p := range []*fakeProc{fs.proc(0, 0), fs.proc(1, 0)} {
		if !p.exited() || !p.drained.Load() {
			t.Fatalf("pid %d: exited %v drained %v, want drained and gone", p.pid, p.exited(), p.drained.Load())
		}
	}
	if fs.count(0) != 2 || fs.count(1) != 1 || len(clk.funcTimers()) != 0 {
		t.Fatalf("started %d+%d, pending respawns %v: want nothing respawned after the stop", fs.count(0), fs.count(1), clk.funcTimers())
	}
}

// A worker that asks to retire (--max-request) is replaced: the new one
// serves before the old one is drained. A user process is reloaded stop
// first, then start: never two at once.
func TestSuperviseRetireAndUserProcess(t *testing.T) {
	t.Parallel()
	m, fs, _ := newSupervised(t, Options{Workers: 1, Processes: []string{"consumer"}}, func(slot, n int) fakeScript {
		return fakeScript{retire: slot == 0 && n == 0}
	})
	old := fs.proc(0, 0)
	eventually(t, "the retiring worker replaced", func() bool {
		cur, _, _, _, _ := slotState(m, 0)
		return fs.count(0) == 2 && cur != nil && cur.pid == fs.proc(0, 1).pid && old.exited()
	})
	if !old.drained.Load() {
		t.Fatal("the retired worker was killed, not drained")
	}
	user := fs.proc(1, 0)
	lines, err := m.Reload(true) // tasks only: no user process, no worker
	if err != nil || len(lines) != 0 || fs.count(1) != 1 {
		t.Fatalf("tasks-only reload: %+v %v, started %d", lines, err, fs.count(1))
	}
	lines, err = m.Reload(false) // workers are not reloadable here; the user process is
	if err != nil || len(lines) != 2 || lines[1].OldPid != user.pid || lines[1].NewPid != fs.proc(1, 1).pid {
		t.Fatalf("reload: %+v %v", lines, err)
	}
	if fs.proc(1, 1).overlapped {
		t.Fatal("the user process's replacement started before the old one stopped")
	}
	if !fs.proc(0, 1).overlapped {
		t.Fatal("the retiring worker's replacement did not start while it still served")
	}
	if !user.drained.Load() || fs.count(1) != 2 {
		t.Fatalf("user process: drained %v, started %d; want stopped first, then one started", user.drained.Load(), fs.count(1))
	}
}
