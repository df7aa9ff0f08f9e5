package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestBenchShort runs a shortened `server bench` on the real binary: both
// modes and the baseline, every scenario, a report and a chart. Figures
// are not asserted (machines are noisy); that every row is there and
// measured something is.
func TestBenchShort(t *testing.T) {
	dir := t.TempDir()
	chart := filepath.Join(dir, "chart.svg")
	report := filepath.Join(dir, "report.md")
	rows, _, _ := runBench(t, 4*time.Minute, 0, "--workers", "2", "--duration", "300ms", "--conns", "8",
		"--idle-conns", "200", "--members", "50", "--chart", chart, "--out", report)
	got := map[string]float64{}
	for _, r := range rows {
		got[r.Mode+"/"+r.Scenario] = r.Ops
		if r.Error != "" {
			t.Errorf("%s/%s failed: %s", r.Mode, r.Scenario, r.Error)
		}
	}
	for _, mode := range []string{"process", "base"} {
		for _, sc := range []string{"http", "echo", "push", "uid-push", "broadcast", "connect", "idle"} {
			if ops, ok := got[mode+"/"+sc]; !ok || ops <= 0 {
				t.Errorf("%s row for %s: got %v ops (present %v), want a measured row", sc, mode, ops, ok)
			}
		}
	}
	for _, sc := range []string{"http", "echo", "connect"} {
		if _, ok := got["baseline/"+sc]; !ok {
			t.Errorf("no baseline row for %s", sc)
		}
	}
	for _, f := range []string{chart, report} {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Errorf("%s not written: %v", f, err)
		}
	}
}

// TestBenchUIDPush runs `server bench --scenarios push,uid-push` in both
// modes: the uid-push row is measured, next to push, with users of three
// connections spread over the workers.
func TestBenchUIDPush(t *testing.T) {
	results, out, _ := runBench(t, 3*time.Minute, 0, "--workers", "2", "--duration", "300ms", "--conns", "9",
		"--scenarios", "push,uid-push")
	rows := 0
	for _, r := range results {
		if r.Mode == "baseline" {
			continue
		}
		if r.Error != "" || r.Ops <= 0 {
			t.Errorf("%s/%s: ops %v, error %q; want a measured row", r.Mode, r.Scenario, r.Ops, r.Error)
		}
		if r.Scenario != "uid-push" {
			continue
		}
		rows++
		u := r.UIDPush
		if u == nil || u.Users != 3 || u.ConnsPerUser != 3 || len(u.ConnsPerWorker) != 2 || u.UsersSpanning == 0 {
			t.Errorf("%s/uid-push stats: got %+v, want 3 users of 3 connections over both workers", r.Mode, u)
		}
	}
	if rows != 2 {
		t.Errorf("uid-push rows: got %d, want one per mode\n%s", rows, out)
	}
}

// benchRow is one row of `server bench --json`, the fields the tests read.
type benchRow struct {
	Scenario string  `json:"scenario"`
	Mode     string  `json:"mode"`
	Ops      float64 `json:"ops"`
	Errors   int64   `json:"errors"`
	Error    string  `json:"error"`
	NA       bool    `json:"na"`
	Skipped  string  `json:"skipped"`
	Note     string  `json:"note"`
	UIDPush  *struct {
		Users          int            `json:"users"`
		ConnsPerUser   int            `json:"conns_per_user"`
		ConnsPerWorker map[string]int `json:"conns_per_worker"`
		UsersSpanning  int            `json:"users_spanning_workers"`
	} `json:"uid_push"`
	Idle *struct {
		Conns int `json:"conns"`
		Procs []struct {
			Role  string `json:"role"`
			Conns int    `json:"conns"`
		} `json:"procs"`
		ConnectionsMs float64 `json:"connections_ms"`
	} `json:"idle"`
	Broadcast *struct {
		Members          int            `json:"members"`
		MembersPerWorker map[string]int `json:"members_per_worker"`
		Broadcasts       int64          `json:"broadcasts"`
		Incomplete       int64          `json:"incomplete"`
	} `json:"broadcast"`
}

// runBench runs `server bench ARGS --json` on the real binary within
// timeout (under a hard RLIMIT_NOFILE of nofile when it is not 0, set by
// the shell as a container's would be), failing the test if it fails, and
// returns its rows, its standard output and its standard error.
func runBench(t *testing.T, timeout time.Duration, nofile int, args ...string) ([]benchRow, []byte, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args = append([]string{"bench"}, append(args, "--json")...)
	cmd := exec.CommandContext(ctx, serverBin, args...)
	if nofile > 0 {
		sh := fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile)
		cmd = exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", sh, serverBin}, args...)...)
	}
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out, stderr.Bytes())
	}
	var rep struct {
		Results []benchRow `json:"results"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out)
	}
	return rep.Results, out, stderr.String()
}
