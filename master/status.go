package master

import (
	"encoding/json"
	"os"
	"runtime"
	"time"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/ipc"
)

// WorkerStatus is one worker process in `server status`.
type WorkerStatus struct {
	ID          int     `json:"id"`
	Pid         int     `json:"pid"`
	Kind        string  `json:"kind"`           // worker, task or process
	Name        string  `json:"name,omitempty"` // a user process's name
	State       string  `json:"state"`
	Connections int     `json:"connections"`
	Requests    uint64  `json:"requests"`
	TasksDone   uint64  `json:"tasks_done,omitempty"`
	TasksQueued int     `json:"tasks_queued,omitempty"` // task worker: handed to it, not yet answered
	RSS         int64   `json:"rss_bytes"`
	Restarts    int     `json:"restarts"`
	UptimeSec   float64 `json:"uptime_sec"`
	Backoff     string  `json:"backoff,omitempty"`
	LastExit    string  `json:"last_exit,omitempty"`
	BusPending  int     `json:"bus_pending_bytes"`
	BusQueued   int     `json:"bus_queued_bytes"` // master -> this worker, not yet written
	// Frames refused because a bounded bus queue was full (the caller got
	// ErrBufferFull/ErrUnavailable or HTTP 503): worker -> master, and
	// master -> worker.
	BusDropped    uint64 `json:"bus_dropped"`
	BusDroppedOut uint64 `json:"bus_dropped_to_worker"`
	Timers        int    `json:"timers"`
	// SilentSec: an unresponsive worker's time since its last answer to
	// the master's ping.
	SilentSec float64 `json:"silent_sec,omitempty"`
}

// ListenerStatus is one port.
type ListenerStatus struct {
	Name     string `json:"name"`
	Addr     string `json:"addr"`
	Protocol string `json:"protocol"`
	TLS      bool   `json:"tls,omitempty"`
	// CertSubject and CertExpires describe the certificate files in use
	// (RFC 3339), after the last successful reload.
	CertSubject string `json:"cert_subject,omitempty"`
	CertExpires string `json:"cert_expires,omitempty"`
}

// Status is what `server status --json` prints.
type Status struct {
	Mode        string           `json:"mode"`
	MasterPid   int              `json:"master_pid"`
	MasterRSS   int64            `json:"master_rss_bytes"`
	Started     string           `json:"started"`
	UptimeSec   float64          `json:"uptime_sec"`
	Dispatch    string           `json:"dispatch"`
	ReactorNum  int              `json:"reactor_num,omitempty"` // PROCESS mode: the master's GOMAXPROCS
	Listeners   []ListenerStatus `json:"listeners"`
	Connections int              `json:"connections"`
	Workers     []WorkerStatus   `json:"workers"`
	TaskWorkers []WorkerStatus   `json:"task_workers"`
	Processes   []WorkerStatus   `json:"processes"`              // user processes (Server.Processes)
	MetricsAddr string           `json:"metrics_addr,omitempty"` // --metrics: where /metrics is served
	// Cluster: this node's view (connected or not, its number, the nodes
	// up); absent for a single server.
	Cluster *cluster.State `json:"cluster,omitempty"`
}

// Status gathers the server's state, asking each worker for its counters.
func (m *Master) Status() Status {
	o := &m.opts
	st := Status{
		Mode: o.Mode, MasterPid: os.Getpid(), MasterRSS: rss(os.Getpid()),
		Started: m.started.UTC().Format(time.RFC3339), UptimeSec: time.Since(m.started).Seconds(),
		Dispatch: m.mode.dispatchName(), ReactorNum: m.reactorNum(), Workers: []WorkerStatus{}, TaskWorkers: []WorkerStatus{},
		Processes: []WorkerStatus{}, MetricsAddr: m.ops.addr,
	}
	for i, l := range o.Listeners {
		st.Listeners = append(st.Listeners, m.listenerStatus(i, l))
	}
	if m.cluster != nil {
		cs := m.cluster.State()
		st.Cluster = &cs
	}
	// The master's own count when it holds the connections (PROCESS),
	// else the sum of the workers' reports.
	perSlot, total, mine := m.mode.conns()
	st.Connections = total
	// One entry per live process: the slot's current one (or, while it is
	// dead and being respawned, the slot itself), a replacement starting,
	// and old ones draining. Processes already gone are left out.
	type entry struct {
		sl       *slot
		p        *proc
		cur      bool
		restarts int
		failing  string
		backoff  time.Duration
	}
	var entries []entry
	m.mu.Lock()
	for _, sl := range m.slots {
		add := func(p *proc) {
			entries = append(entries, entry{sl: sl, p: p, cur: p == sl.cur, restarts: sl.restarts, failing: sl.failing, backoff: sl.backoff})
		}
		if sl.cur == nil || sl.cur.State() == StateStopped {
			add(nil)
		} else {
			add(sl.cur)
		}
		if sl.next != nil {
			add(sl.next)
		}
		for _, p := range sl.old {
			if p.State() != StateStopped {
				add(p)
			}
		}
	}
	m.mu.Unlock()
	for _, e := range entries {
		ws := WorkerStatus{ID: e.sl.id, Kind: e.sl.kind(), Name: e.sl.process, Restarts: e.restarts, LastExit: e.failing}
		if e.backoff > 0 && e.failing != "" {
			ws.Backoff = e.backoff.String()
		}
		if e.p == nil {
			// Dead, a replacement due: after the back-off when it keeps
			// dying young (a crash loop), at once otherwise.
			ws.State = StateRestarting
			if ws.Backoff != "" {
				ws.State = StateBackoff
			}
		} else {
			ws.Pid = e.p.pid
			ws.State = e.p.State()
			if ws.State == StateReady && e.cur {
				// Serving again: the crash loop is over (respawn clears the
				// slot's note a moment after the worker says Ready).
				ws.Backoff, ws.LastExit = "", ""
			}
			if ws.State == StateStopped { // exited since the entries were read
				if !e.cur {
					continue
				}
				ws.State = StateRestarting
			}
			ws.RSS = rss(e.p.pid)
			ws.UptimeSec = time.Since(e.p.start).Seconds()
			ws.BusQueued = e.p.out.Pending()
			ws.BusDroppedOut = e.p.out.Dropped()
			if e.sl.task {
				e.p.mu.Lock()
				ws.TasksQueued = len(e.p.tasks)
				e.p.mu.Unlock()
			}
			if ws.State == StateStarting {
				// Nothing but the handshake goes to a starting worker.
			} else if ws.State == StateUnresponsive {
				// It would not answer the query either.
				ws.SilentSec = time.Since(time.Unix(0, e.p.lastPong.Load())).Seconds()
			} else if b, err := e.p.query(ipcStats, time.Second); err == nil {
				var s ipc.WorkerStats
				if json.Unmarshal(b, &s) == nil {
					ws.Connections, ws.Requests, ws.TasksDone = s.Connections, s.Requests, s.TasksDone
					ws.BusPending, ws.Timers, ws.BusDropped = s.BusPending, s.Timers, s.BusDropped
				}
			}
			if mine && e.sl.worker() && (ws.State == StateReady || ws.State == StateUnresponsive) {
				ws.Connections = perSlot[e.sl.id]
			}
		}
		if !mine && e.sl.worker() {
			st.Connections += ws.Connections
		}
		switch {
		case e.sl.task:
			st.TaskWorkers = append(st.TaskWorkers, ws)
		case e.sl.process != "":
			st.Processes = append(st.Processes, ws)
		default:
			st.Workers = append(st.Workers, ws)
		}
	}
	return st
}

func (m *Master) reactorNum() int {
	if m.opts.Mode != ModeProcess {
		return 0
	}
	return runtime.GOMAXPROCS(0)
}
