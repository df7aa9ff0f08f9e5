package command

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDurationFlagRanges: a duration flag of start takes 0 only where it
// documents 0 as off (--heartbeat-idle, --room-history-ttl); elsewhere 0
// is refused (it used to mean the default, quietly), as is any value
// outside the flag's range, on the command line and in the config file,
// naming the flag and the range in the help text. In-range values are
// taken as given.
func TestDurationFlagRanges(t *testing.T) {
	s := fuzzServer()
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	for _, r := range durationRanges {
		for _, bad := range []string{"0s", "-1s", (r.min - time.Millisecond).String(), (r.max + time.Second).String()} {
			if bad == "0s" && r.zeroOff != "" {
				continue
			}
			_, err := s.loadOptions([]string{"--run-dir", run, "--" + r.flag, bad})
			if err == nil || !strings.Contains(err.Error(), "--"+r.flag) || !strings.Contains(err.Error(), r.text()) {
				t.Errorf("--%s %s: got %v, want a refusal naming the flag and %q", r.flag, bad, err, r.text())
			}
		}
	}
	o, err := s.loadOptions([]string{"--run-dir", run, "--worker-timeout", "100ms", "--request-timeout", "24h",
		"--read-timeout", "1h", "--idle-timeout", "2s", "--reload-wait", "3s", "--heartbeat-idle", "0s", "--cluster-timeout", "10m"})
	if err != nil || o.WorkerTimeout != 100*time.Millisecond || o.RequestTimeout != 24*time.Hour || o.ReadTimeout != time.Hour ||
		o.IdleTimeout != 2*time.Second || o.ReloadWait != 3*time.Second || o.HeartbeatIdle != 0 {
		t.Fatalf("in range: %+v, %v", o, err)
	}
	cfg := filepath.Join(dir, "forkd.yaml")
	os.WriteFile(cfg, []byte("request-timeout: 0s\n"), 0o600)
	if _, err := s.loadOptions([]string{"--run-dir", run, "--config", cfg}); err == nil || !strings.Contains(err.Error(), "--request-timeout 0s") {
		t.Errorf("request-timeout: 0s in the config file: got %v, want a refusal", err)
	}
	help := strings.Builder{}
	for _, f := range startFlags() {
		help.WriteString(f.String() + "\n")
	}
	for _, r := range durationRanges {
		if !strings.Contains(help.String(), r.text()) {
			t.Errorf("start's help does not give --%s's range %q", r.flag, r.text())
		}
	}
}
