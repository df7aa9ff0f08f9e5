package command

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAPITokenUnsendable: a token with white space at either end or a
// control character can never match a Bearer header (the header is
// trimmed, and cannot carry control characters), so every call would get
// 401 with nothing saying why: start refuses it in one line, without
// printing the token. The file's own white space is trimmed as before.
func TestAPITokenUnsendable(t *testing.T) {
	s := fuzzServer()
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	for _, tok := range []string{" s3cret", "s3cret ", "s3\tcret", "s3cret\n", "s3\ncret", "s3\x7fcret"} {
		_, err := s.loadOptions([]string{"--run-dir", run, "--api-token", tok})
		if err == nil || !strings.Contains(err.Error(), "--api-token") || strings.Contains(err.Error(), "s3") {
			t.Errorf("--api-token %q: got %v, want a refusal naming the flag, not the token", tok, err)
		}
	}
	f := filepath.Join(dir, "token")
	os.WriteFile(f, []byte("s3\ncret\n"), 0o600)
	if _, err := s.loadOptions([]string{"--run-dir", run, "--api-token-file", f}); err == nil || !strings.Contains(err.Error(), "--api-token-file") {
		t.Errorf("a two-line token file: got %v, want a refusal naming the file", err)
	}
	os.WriteFile(f, []byte("  s3cret\n"), 0o600)
	for _, args := range [][]string{{"--api-token", "s3 cret"}, {"--api-token-file", f}} {
		o, err := s.loadOptions(append([]string{"--run-dir", run}, args...))
		if err != nil || !strings.HasPrefix(o.APIToken, "s3") {
			t.Errorf("%q: got %v, want it taken", args, err)
		}
	}
}
