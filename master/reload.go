package master

import (
	"fmt"
	"time"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/worker"
)

const (
	ipcStats = ipc.TypeStats
	ipcConns = ipc.TypeConns
)

// ReloadLine reports one replaced worker.
type ReloadLine struct {
	ID     int    `json:"id"`
	Kind   string `json:"kind"`
	OldPid int    `json:"old_pid"`
	NewPid int    `json:"new_pid"`
	Took   string `json:"took"`
	Note   string `json:"note,omitempty"`
}

// Reload replaces the workers one slot at a time (Workerman's reload): for
// each, start the replacement with the same id, wait until it is ready,
// then drain the old one within ReloadWait. A replacement that fails to
// become ready stops the reload; the old worker keeps serving.
func (m *Master) Reload(tasksOnly bool) ([]ReloadLine, error) {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	if !tasksOnly {
		// New certificates first: a bad file stops the reload before any
		// worker is replaced, and the certificates in use stay.
		if err := m.ReloadCerts(); err != nil {
			return nil, err
		}
	}
	m.notifyReloading()
	defer m.notifyReady()
	m.mu.Lock()
	slots := append([]*slot(nil), m.slots...)
	m.mu.Unlock()
	var lines []ReloadLine
	for _, sl := range slots {
		if tasksOnly && !sl.task {
			continue
		}
		if sl.worker() && !m.opts.Reloadable {
			lines = append(lines, ReloadLine{ID: sl.id, Kind: "worker", Note: "not reloadable"})
			continue
		}
		line, err := m.replace(sl)
		if err != nil {
			m.ops.reloadsFailed.Add(1)
			return lines, err
		}
		lines = append(lines, line)
	}
	m.ops.reloadsOK.Add(1)
	m.log.Info().Int("replaced", len(lines)).Msg("reload done")
	return lines, nil
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
		return ReloadLine{}, fmt.Errorf("server is stopping")
	}
	if sl.process != "" {
		return m.restartProcess(sl)
	}
	begin := time.Now()
	m.mu.Lock()
	old := sl.cur
	m.mu.Unlock()
	np, err := m.spawn(sl)
	if err != nil {
		return ReloadLine{}, fmt.Errorf("%s %d: %w", kind, sl.id, err)
	}
	m.mu.Lock()
	sl.next = np
	m.mu.Unlock()
	if err := m.waitReady(np); err != nil {
		np.intended.Store(true)
		np.cmd.Process.Kill()
		<-np.exited
		m.mu.Lock()
		sl.next = nil
		m.mu.Unlock()
		oldPid := 0
		if old != nil {
			oldPid = old.pid
		}
		m.log.Error().Err(err).Int("worker", sl.id).Msg("reload stopped: replacement not ready")
		return ReloadLine{}, fmt.Errorf("reload stopped: %s %d failed to become ready: %v (the old %s, pid %d, keeps serving)", kind, sl.id, err, kind, oldPid)
	}
	m.mu.Lock()
	sl.cur, sl.next = np, nil
	sl.failing = "" // a slot in a crash loop is healthy again
	if old != nil {
		sl.old = append(sl.old, old)
	}
	m.mu.Unlock()
	if m.backend != nil && sl.worker() {
		m.backend.attach(np)
	}
	line := ReloadLine{ID: sl.id, Kind: kind, NewPid: np.pid}
	if old != nil {
		line.OldPid = old.pid
		old.intended.Store(true)
		old.state.Store(StateDraining)
		m.drain(old, worker.DrainReload)
		select {
		case <-old.exited:
		case <-time.After(m.opts.ReloadWait + 3*time.Second):
			m.log.Warn().Int("worker", sl.id).Int("pid", old.pid).Msg("draining worker overran reload-wait, killing")
			old.cmd.Process.Kill()
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
	line.Took = time.Since(begin).Round(time.Millisecond).String()
	m.log.Info().Int("worker", sl.id).Int("old_pid", line.OldPid).Int("new_pid", line.NewPid).Str("took", line.Took).Msg("worker reloaded")
	return line, nil
}
