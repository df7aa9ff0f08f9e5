package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestBenchOverFileLimit runs `server bench` under a hard RLIMIT_NOFILE of
// 1,500 (set by the shell, as a container's would be) and asks for 3,000
// idle connections and a room of 3,000: BASE mode runs both, on as many
// workers as that takes, from several load generator processes, and the
// server reports holding all 3,000; PROCESS mode and the baseline, whose
// one process would hold them all, are skipped with one line saying why;
// and no load generator process outlives bench.
func TestBenchOverFileLimit(t *testing.T) {
	rows, out, stderr := runBench(t, 3*time.Minute, 1500, "--workers", "2", "--duration", "500ms", "--conns", "16",
		"--scenarios", "idle,broadcast", "--idle-conns", "3000", "--members", "3000", "--modes", "base,process")
	seen := map[string]bool{}
	for _, r := range rows {
		key := r.Mode + "/" + r.Scenario
		seen[key] = true
		switch r.Mode {
		case "process", "baseline":
			if r.Scenario == "broadcast" && r.Mode == "baseline" {
				continue // the baseline has no chat
			}
			want := "PROCESS mode's master holds all 3000 connections, and one process may open at most 1500 files here"
			if r.Mode == "baseline" {
				want = "the baseline holds all 3000 connections in one process"
			}
			if !r.NA || !strings.Contains(r.Skipped, want) {
				t.Errorf("%s: got na %v, skipped %q; want it skipped saying %q", key, r.NA, r.Skipped, want)
			}
			if !strings.Contains(stderr, "["+r.Mode+"] "+r.Scenario+": skipped: ") {
				t.Errorf("%s: no skip line on stderr:\n%s", key, stderr)
			}
		case "base":
			if r.Error != "" || r.Ops != 3000 && r.Scenario == "idle" || r.Ops <= 0 || r.Errors != 0 {
				t.Errorf("%s: ops %v, errors %d, error %q; want a measured row without errors", key, r.Ops, r.Errors, r.Error)
			}
			if !strings.Contains(r.Note, "3000 connections, at most 1500 open files per process here: 4 workers") ||
				!strings.Contains(r.Note, "3 load generator processes") {
				t.Errorf("%s: note %q; want 4 workers and 3 load generator processes", key, r.Note)
			}
			if r.Scenario == "idle" {
				held := 0
				if r.Idle != nil {
					for _, p := range r.Idle.Procs {
						held += p.Conns
					}
				}
				if r.Idle == nil || r.Idle.Conns != 3000 || held != 3000 || r.Idle.ConnectionsMs <= 0 {
					t.Errorf("base/idle: got %+v; want 3000 connections, all 3000 reported by the server's workers", r.Idle)
				}
			}
			if r.Scenario == "broadcast" {
				b := r.Broadcast
				if b == nil || b.Members != 3000 || len(b.MembersPerWorker) != 4 || b.Broadcasts == 0 || b.Incomplete != 0 {
					t.Errorf("base/broadcast: got %+v; want 3000 members over 4 workers, broadcasts all complete", b)
				}
			}
		}
	}
	for _, k := range []string{"base/idle", "base/broadcast", "process/idle", "process/broadcast", "baseline/idle"} {
		if !seen[k] {
			t.Errorf("no %s row\n%s", k, out)
		}
	}
	// Every load generator process is gone (bench ended them by pid).
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && args[0] == serverBin && args[1] == "bench-client" {
			t.Errorf("load generator process %s outlived bench: %q", e.Name(), args)
		}
	}
}
