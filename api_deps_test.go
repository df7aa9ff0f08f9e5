package forkd

import (
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/forkd/forkd/reactor"
)

// TestRootDeps: the root package is the library's API. A program that
// uses it and does not import package bench links no plotting library
// (gonum/plot and its fonts, LaTeX and PDF writers), no load generator and
// no test harness.
func TestRootDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps .: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps . listed %d packages: %q", len(deps), deps)
	}
	for _, d := range deps {
		for _, bad := range []string{"gonum.org/", "codeberg.org/go-", "git.sr.ht/~sbinet/gg", "github.com/ajstarks/svgo",
			"golang.org/x/image", "github.com/forkd/forkd/bench", "github.com/forkd/forkd/internal/testharness"} {
			if strings.HasPrefix(d, bad) {
				t.Errorf("the root package links %s", d)
			}
		}
	}
}

// TestConnInfoFields: ConnInfo carries every field of the reactor's
// description of a connection, with the same JSON name (Worker.Info
// copies them one by one).
func TestConnInfoFields(t *testing.T) {
	a, b := reflect.TypeFor[ConnInfo](), reflect.TypeFor[reactor.Info]()
	if a.NumField() != b.NumField() {
		t.Fatalf("ConnInfo has %d fields, reactor.Info %d", a.NumField(), b.NumField())
	}
	for i := range a.NumField() {
		fa, fb := a.Field(i), b.Field(i)
		if fa.Name != fb.Name || fa.Type != fb.Type || fa.Tag.Get("json") != fb.Tag.Get("json") {
			t.Errorf("field %d: ConnInfo.%s %s %q, reactor.Info.%s %s %q", i, fa.Name, fa.Type, fa.Tag.Get("json"), fb.Name, fb.Type, fb.Tag.Get("json"))
		}
	}
}
