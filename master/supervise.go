package master

import (
	"errors"
	"fmt"
	"time"

	"github.com/forkd/forkd/ipc"
)

// The supervisor's state machines: a slot's process starts, becomes ready
// or fails to; exits and is respawned (at once, or after a crash-loop
// back-off); is replaced (reload, --max-request retirement, a user
// process's stop-then-start); and everything stops, gracefully or now.
// They reach the operating system only through m.starter and osProcess,
// and time only through m.clock (osproc.go), so supervise_test.go drives
// them with fake workers and a fake clock.

// startAll starts every slot's process, then waits for all to be ready;
// on a failure it kills those it started.
func (m *Master) startAll() error {
	var procs []*proc
	for _, sl := range m.slots {
		p, err := m.spawn(sl, asCur)
		if err != nil {
			m.killAll()
			return err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		if err := m.waitReady(p); err != nil {
			m.killAll()
			return fmt.Errorf("worker %d failed to start: %w", p.slot.id, err)
		}
		m.mode.attach(p)
	}
	return nil
}

// waitReady waits for p's Ready, its failure, or the ready timeout.
func (m *Master) waitReady(p *proc) error {
	select {
	case err := <-p.ready:
		return err
	case <-m.clock.After(m.opts.ReadyTimeout):
		p.kill()
		return fmt.Errorf("not ready after %s", m.opts.ReadyTimeout)
	}
}

// shutdown stops every worker: gracefully (drain within ReloadWait) or now.
func (m *Master) shutdown(graceful bool) {
	if !m.shut.CompareAndSwap(false, true) { // one stop; a second waits for it
		<-m.done
		return
	}
	m.mu.Lock()
	m.stopping = true
	var procs []*proc
	for _, sl := range m.slots {
		if sl.timer != nil {
			sl.timer.Stop()
		}
		for _, p := range append([]*proc{sl.cur, sl.next}, sl.old...) {
			if p != nil {
				procs = append(procs, p)
			}
		}
	}
	m.mu.Unlock()
	m.mode.wakeAll()
	m.log.Info().Bool("graceful", graceful).Msg("stopping")
	m.notify("STOPPING=1\nSTATUS=stopping")
	wait := m.opts.ReloadWait
	m.mode.stopConns(graceful, wait)
	code := ipc.DrainNow
	if graceful {
		code = ipc.DrainStop
	} else {
		wait = 2 * time.Second
	}
	if graceful {
		// Workers first: the requests they finish may still hand work to
		// the task workers, which drain once the workers are gone; user
		// processes last (they may push to connections until then).
		var workers, tasks, users []*proc
		for _, p := range procs {
			switch {
			case p.slot.task:
				tasks = append(tasks, p)
			case p.slot.process != "":
				users = append(users, p)
			default:
				workers = append(workers, p)
			}
		}
		m.stopProcs(workers, code, wait)
		m.stopProcs(tasks, code, wait)
		m.stopProcs(users, code, wait)
	} else {
		// Now, but user processes still last.
		var rest, users []*proc
		for _, p := range procs {
			if p.slot.process != "" {
				users = append(users, p)
			} else {
				rest = append(rest, p)
			}
		}
		m.stopProcs(rest, code, wait)
		m.stopProcs(users, code, wait)
	}
	close(m.done)
	m.log.Info().Msg("server stopped")
}

// stopProcs drains procs (ipc.Drain* code) and waits for them to exit,
// killing those still there after wait (plus a margin for OnWorkerStop).
func (m *Master) stopProcs(procs []*proc, code uint16, wait time.Duration) {
	for _, p := range procs {
		p.intended.Store(true)
		p.setState(StateDraining)
		m.drain(p, code)
	}
	deadline := m.clock.After(wait + 2*time.Second)
	expired := false
	for _, p := range procs {
		if !expired {
			select {
			case <-p.exited:
				continue
			case <-deadline: // fires once: every process still there is killed
				expired = true
			}
		}
		select {
		case <-p.exited:
			continue
		default:
		}
		m.log.Warn().Int("worker", p.slot.id).Int("worker_pid", p.pid).Msg("worker did not stop in time, killing")
		p.kill()
		<-p.exited
	}
}

func (m *Master) killAll() {
	m.mu.Lock()
	m.stopping = true
	var procs []*proc
	for _, sl := range m.slots {
		if sl.cur != nil {
			procs = append(procs, sl.cur)
		}
	}
	m.mu.Unlock()
	for _, p := range procs {
		p.intended.Store(true)
		p.kill()
		<-p.exited
	}
}

// exited is called once a worker process has been reaped.
func (m *Master) exited(p *proc) {
	sl := p.slot
	m.mu.Lock()
	current := sl.cur == p
	stopping := m.stopping
	m.mu.Unlock()
	if p.intended.Load() || stopping || !current {
		m.log.Debug().Int("worker", sl.id).Int("worker_pid", p.pid).Msg("worker exited")
		return
	}
	up := m.clock.Now().Sub(p.start)
	why := exitString(p.exitErr)
	if reason, _ := p.startErr.Load().(string); reason != "" {
		why = reason + " (" + why + ")"
	}
	m.log.Error().Int("worker", sl.id).Int("worker_pid", p.pid).Str("status", why).
		Dur("uptime", up).Msg("worker exited unexpectedly")
	m.respawnLater(sl, up, why)
}

// respawnLater replaces a dead worker with the same id, backing off when it
// keeps dying young (a crash loop), and logging that it does.
func (m *Master) respawnLater(sl *slot, up time.Duration, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopping {
		return
	}
	if up < 2*time.Second {
		if sl.backoff == 0 {
			sl.backoff = 100 * time.Millisecond
		} else if sl.backoff *= 2; sl.backoff > 10*time.Second {
			sl.backoff = 10 * time.Second
		}
		sl.failing = why
		m.log.Warn().Int("worker", sl.id).Dur("backoff", sl.backoff).Str("last_exit", why).Msg("worker crash loop: backing off")
	} else {
		sl.backoff = 0
		sl.failing = ""
	}
	sl.timer = m.clock.AfterFunc(sl.backoff, func() { m.respawn(sl) })
}

func (m *Master) respawn(sl *slot) {
	// Not while a reload or max-request replacement runs: it may be
	// replacing this very slot, and then there is nothing left to do.
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	m.mu.Lock()
	if m.stopping || (sl.cur != nil && sl.cur.State() != StateStopped) {
		m.mu.Unlock()
		return
	}
	sl.restarts++
	m.mu.Unlock()
	p, err := m.spawn(sl, asCur)
	if err != nil {
		m.log.Error().Err(err).Int("worker", sl.id).Msg("respawn failed")
		m.respawnLater(sl, 0, err.Error())
		return
	}
	if err := m.waitReady(p); err != nil {
		m.log.Error().Err(err).Int("worker", sl.id).Int("worker_pid", p.pid).Msg("replacement worker failed to start")
		return // its exit schedules the next try
	}
	m.mu.Lock()
	if p.State() != StateStopped {
		// Not when it died right after Ready: its exit has already
		// recorded the failure and scheduled the next try.
		sl.failing = ""
	}
	m.mu.Unlock()
	m.mode.attach(p)
	m.log.Info().Int("worker", sl.id).Int("worker_pid", p.pid).Int("restarts", sl.restarts).Msg("worker replaced")
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// retire replaces a worker that reached --max-request.
func (m *Master) retire(p *proc) {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	m.mu.Lock()
	current := p.slot.cur == p
	m.mu.Unlock()
	if !current || m.isStopping() {
		return
	}
	if _, err := m.replace(p.slot); err != nil {
		m.log.Error().Err(err).Int("worker", p.slot.id).Msg("max-request replacement failed")
	}
}

func (m *Master) replace(sl *slot) (ReloadLine, error) {
	kind := sl.kind()
	if m.isStopping() {
		return ReloadLine{}, tagged{errors.New("server is stopping"), ErrStopping}
	}
	if sl.process != "" {
		return m.restartProcess(sl)
	}
	begin := m.clock.Now()
	m.mu.Lock()
	old := sl.cur
	m.mu.Unlock()
	np, err := m.spawn(sl, asNext)
	if err != nil {
		return ReloadLine{}, fmt.Errorf("%s %d: %w", kind, sl.id, err)
	}
	if err := m.waitReady(np); err != nil {
		np.intended.Store(true)
		np.kill()
		<-np.exited
		m.mu.Lock()
		sl.next = nil
		m.mu.Unlock()
		oldPid := 0
		if old != nil {
			oldPid = old.pid
		}
		m.log.Error().Err(err).Int("worker", sl.id).Msg("reload stopped: replacement not ready")
		return ReloadLine{}, fmt.Errorf("reload stopped: %s %d failed to become ready: %w (the old %s, pid %d, keeps serving)", kind, sl.id, err, kind, oldPid)
	}
	m.mu.Lock()
	sl.cur, sl.next = np, nil
	sl.failing = "" // a slot in a crash loop is healthy again
	if old != nil {
		sl.old = append(sl.old, old)
	}
	m.mu.Unlock()
	m.mode.attach(np)
	line := ReloadLine{ID: sl.id, Kind: kind, NewPid: np.pid}
	if old != nil {
		line.OldPid = old.pid
		old.intended.Store(true)
		old.setState(StateDraining)
		m.drain(old, ipc.DrainReload)
		select {
		case <-old.exited:
		case <-m.clock.After(m.opts.ReloadWait + 3*time.Second):
			m.log.Warn().Int("worker", sl.id).Int("worker_pid", old.pid).Msg("draining worker overran reload-wait, killing")
			old.kill()
			<-old.exited
		}
		m.mu.Lock()
		for i, p := range sl.old {
			if p == old {
				sl.old = append(sl.old[:i], sl.old[i+1:]...)
				break
			}
		}
		m.mu.Unlock()
	}
	line.Took = m.clock.Now().Sub(begin).Round(time.Millisecond).String()
	m.log.Info().Int("worker", sl.id).Int("old_pid", line.OldPid).Int("new_pid", line.NewPid).Str("took", line.Took).Msg("worker reloaded")
	return line, nil
}

// restartProcess reloads a user process (Server.Processes): unlike a
// worker's, the old one is stopped first and only then is the new one
// started, so two copies of a queue consumer never run at once (Workerman
// reloads every process this way). Its work is not a client's, so the gap
// costs no connection.
func (m *Master) restartProcess(sl *slot) (ReloadLine, error) {
	begin := m.clock.Now()
	m.mu.Lock()
	old := sl.cur
	m.mu.Unlock()
	line := ReloadLine{ID: sl.id, Kind: sl.kind()}
	if old != nil && old.State() != StateStopped {
		line.OldPid = old.pid
		old.intended.Store(true)
		old.setState(StateDraining)
		m.drain(old, ipc.DrainReload)
		select {
		case <-old.exited:
		case <-m.clock.After(m.opts.ReloadWait + 3*time.Second):
			m.log.Warn().Int("worker", sl.id).Str("process", sl.process).Int("worker_pid", old.pid).Msg("process overran reload-wait, killing")
			old.kill()
			<-old.exited
		}
	}
	np, err := m.spawn(sl, asCur)
	if err != nil {
		return line, fmt.Errorf("process %s: %w", sl.process, err)
	}
	if err := m.waitReady(np); err != nil {
		// Its exit schedules the next try, with back-off, as after a crash.
		return line, fmt.Errorf("reload stopped: process %s failed to become ready: %w", sl.process, err)
	}
	m.mu.Lock()
	sl.failing = ""
	m.mu.Unlock()
	line.NewPid = np.pid
	line.Took = m.clock.Now().Sub(begin).Round(time.Millisecond).String()
	m.log.Info().Int("worker", sl.id).Str("process", sl.process).Int("old_pid", line.OldPid).Int("new_pid", line.NewPid).Str("took", line.Took).Msg("process reloaded")
	return line, nil
}
