package master

import (
	"github.com/forkd/forkd/ipc"
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
