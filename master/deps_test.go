package master

import (
	"os/exec"
	"strings"
	"testing"
)

// TestMasterDoesNotImportWorker: the master and the worker meet only on the
// wire (package ipc owns every value that crosses, docs/architecture.md);
// the master's code (tests aside) imports no worker package, directly or
// through another package.
func TestMasterDoesNotImportWorker(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps .: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps . listed %d packages: %q", len(deps), deps)
	}
	for _, d := range deps {
		if d == "github.com/forkd/forkd/worker" || strings.HasPrefix(d, "github.com/forkd/forkd/worker/") {
			t.Errorf("package master links %s", d)
		}
	}
}
