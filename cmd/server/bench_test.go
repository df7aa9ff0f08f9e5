package main

import (
	"context"
	"encoding/json"
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
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, serverBin, "bench", "--workers", "2", "--duration", "300ms", "--conns", "8",
		"--idle-conns", "200", "--members", "50", "--json", "--chart", chart, "--out", report)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	var rep struct {
		Results []struct {
			Scenario string  `json:"scenario"`
			Mode     string  `json:"mode"`
			Ops      float64 `json:"ops"`
			Error    string  `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out)
	}
	got := map[string]float64{}
	for _, r := range rep.Results {
		got[r.Mode+"/"+r.Scenario] = r.Ops
		if r.Error != "" {
			t.Errorf("%s/%s failed: %s", r.Mode, r.Scenario, r.Error)
		}
	}
	for _, mode := range []string{"process", "base"} {
		for _, sc := range []string{"http", "echo", "push", "broadcast", "connect", "idle"} {
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
