package master

import (
	"fmt"
	"time"

	"github.com/forkd/forkd/worker"
)

// restartProcess reloads a user process (Server.Processes): unlike a
// worker's, the old one is stopped first and only then is the new one
// started, so two copies of a queue consumer never run at once (Workerman
// reloads every process this way). Its work is not a client's, so the gap
// costs no connection.
func (m *Master) restartProcess(sl *slot) (ReloadLine, error) {
	begin := time.Now()
	m.mu.Lock()
	old := sl.cur
	m.mu.Unlock()
	line := ReloadLine{ID: sl.id, Kind: sl.kind()}
	if old != nil && old.State() != StateStopped {
		line.OldPid = old.pid
		old.intended.Store(true)
		old.state.Store(StateDraining)
		m.drain(old, worker.DrainReload)
		select {
		case <-old.exited:
		case <-time.After(m.opts.ReloadWait + 3*time.Second):
			m.log.Warn().Int("worker", sl.id).Str("process", sl.process).Int("pid", old.pid).Msg("process overran reload-wait, killing")
			old.cmd.Process.Kill()
			<-old.exited
		}
	}
	np, err := m.spawn(sl)
	if err != nil {
		return line, fmt.Errorf("process %s: %w", sl.process, err)
	}
	m.mu.Lock()
	sl.cur = np
	m.mu.Unlock()
	if err := m.waitReady(np); err != nil {
		// Its exit schedules the next try, with back-off, as after a crash.
		return line, fmt.Errorf("reload stopped: process %s failed to become ready: %v", sl.process, err)
	}
	m.mu.Lock()
	sl.failing = ""
	m.mu.Unlock()
	line.NewPid = np.pid
	line.Took = time.Since(begin).Round(time.Millisecond).String()
	m.log.Info().Int("worker", sl.id).Str("process", sl.process).Int("old_pid", line.OldPid).Int("new_pid", line.NewPid).Str("took", line.Took).Msg("process reloaded")
	return line, nil
}
