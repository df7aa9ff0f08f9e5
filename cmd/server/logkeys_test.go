package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLogKeysOnce: every JSON log line carries each key once. The master's
// lines about a worker used to carry "worker" and "pid" twice (the master's
// own -1 and pid, then the worker's), which strict parsers refuse and
// others resolve to either value.
func TestLogKeysOnce(t *testing.T) {
	s := startServer(t, "process", 2, "--log-format", "json")
	pids := s.workerPids()
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "worker 0 replaced in the log", func() bool {
		return strings.Contains(s.log(), "worker replaced")
	})
	lines := 0
	// Up to the last newline: the processes still log (the replacement
	// starting), and a reader may see part of a line being written.
	log := s.log()
	for _, line := range strings.Split(log[:strings.LastIndexByte(log, '\n')+1], "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		lines++
		keys, err := topKeys([]byte(line))
		if err != nil {
			t.Fatalf("log line is not JSON (%v): %s", err, line)
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if seen[k] {
				t.Errorf("key %q twice in: %s", k, line)
			}
			seen[k] = true
		}
		if strings.Contains(line, `"worker replaced"`) && (!seen["worker"] || !seen["worker_pid"] || !seen["pid"]) {
			t.Errorf("the master's line about a worker lacks worker, worker_pid or pid: %s", line)
		}
	}
	if lines == 0 {
		t.Fatal("no JSON log lines")
	}
}

// topKeys returns the keys of a JSON object in order, repeats included.
func topKeys(b []byte) ([]string, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	if _, err := d.Token(); err != nil { // {
		return nil, err
	}
	var keys []string
	for d.More() {
		k, err := d.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, k.(string))
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return nil, err
		}
	}
	return keys, nil
}
