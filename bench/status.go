package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// statusJSON is the part of `server status --json` bench reads.
type statusJSON struct {
	Mode        string `json:"mode"`
	MasterPid   int    `json:"master_pid"`
	Connections int    `json:"connections"`
	Listeners   []struct {
		Name string `json:"name"`
		Addr string `json:"addr"`
	} `json:"listeners"`
	Workers []struct {
		ID          int    `json:"id"`
		Pid         int    `json:"pid"`
		State       string `json:"state"`
		Connections int    `json:"connections"`
	} `json:"workers"`
	TaskWorkers []struct {
		ID  int `json:"id"`
		Pid int `json:"pid"`
	} `json:"task_workers"`
}

// status runs `<exe> status --json --run-dir DIR`.
func (t *target) status(ctx context.Context) (*statusJSON, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, t.exe, "status", "--json", "--run-dir", t.runDir)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("status --json: %w: %s", err, bytes.TrimSpace(errb.Bytes()))
	}
	var st statusJSON
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		return nil, fmt.Errorf("status --json: %w: %q", err, truncate(out.String(), 200))
	}
	return &st, nil
}

// procs lists the server's processes: what status --json reports plus any
// other member of the server's process group.
func (t *target) procs(ctx context.Context) []proc { return t.refreshProcs(ctx, nil) }

// refreshProcs lists the server's processes. With prev it does not ask
// `status` (which costs the server CPU) but keeps prev's roles and adds any
// new member of the process group, such as a respawned worker.
func (t *target) refreshProcs(ctx context.Context, prev []proc) []proc {
	if t.inProcess {
		return []proc{{pid: os.Getpid(), role: "baseline"}}
	}
	var ps []proc
	seen := map[int]bool{}
	add := func(pid int, role string) {
		if pid > 0 && !seen[pid] {
			seen[pid] = true
			ps = append(ps, proc{pid: pid, role: role})
		}
	}
	for _, p := range prev {
		add(p.pid, p.role)
	}
	switch {
	case t.mode == modeBaseline:
		add(t.cmd.Process.Pid, "baseline")
	case t.mode == modeNginx:
		add(t.cmd.Process.Pid, "nginx master")
	case prev == nil:
		if st, err := t.status(ctx); err == nil {
			add(st.MasterPid, "master")
			for _, w := range st.Workers {
				add(w.Pid, "worker "+strconv.Itoa(w.ID))
			}
			for _, w := range st.TaskWorkers {
				add(w.Pid, "task "+strconv.Itoa(w.ID))
			}
		}
	}
	for _, pid := range groupPids(t.cmd.Process.Pid) {
		role := "pid " + strconv.Itoa(pid)
		switch {
		case t.mode == modeNginx:
			role = "nginx worker"
		case pid == t.cmd.Process.Pid:
			role = "master"
		}
		add(pid, role)
	}
	for _, p := range ps {
		t.remember(p.pid)
	}
	return ps
}

// connsByPid asks the server how many connections each process holds. In
// PROCESS mode the master holds every connection (its reactor); in BASE mode
// each worker holds its own.
func (t *target) connsByPid(ctx context.Context) map[int]int {
	out := map[int]int{}
	if t.inProcess || t.mode == modeBaseline || t.mode == modeNginx {
		return out
	}
	st, err := t.status(ctx)
	if err != nil {
		return out
	}
	if st.Mode == "process" && st.Connections > 0 {
		out[st.MasterPid] = st.Connections
		return out
	}
	for _, w := range st.Workers {
		if w.Connections > 0 {
			out[w.Pid] = w.Connections
		}
	}
	return out
}

// timeQueries times `server status --json` and `server connections --json`
// (whose whole output is read) against the running server, in
// milliseconds; errText says why either failed.
func (t *target) timeQueries(ctx context.Context) (statusMs, connsMs float64, errText string) {
	t0 := time.Now()
	if _, err := t.status(ctx); err != nil {
		errText = err.Error()
	}
	statusMs = float64(time.Since(t0).Microseconds()) / 1000
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, t.exe, "connections", "--json", "--run-dir", t.runDir)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &errb
	t0 = time.Now()
	err := cmd.Run()
	connsMs = float64(time.Since(t0).Microseconds()) / 1000
	if err != nil {
		errText = strings.TrimSpace(errText + "; connections --json: " + err.Error() + ": " + string(bytes.TrimSpace(errb.Bytes())))
	}
	return statusMs, connsMs, errText
}
