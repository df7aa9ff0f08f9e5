package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestDocsFlagsExist: every --flag that README.md and docs/*.md mention
// (docs/BENCHMARKS.md aside: its commands are records of past runs) is
// one the binary's help knows, on some command, and every `bin/server
// CMD` they show is one of its commands. A renamed or removed flag fails
// here until the docs follow.
func TestDocsFlagsExist(t *testing.T) {
	// Flags the docs mention that the built-in server's help does not show,
	// and why.
	notInHelp := map[string]string{
		"--listen": "shown only by a program with listeners other than http and ws (the built-in one has none)",
		"--bogus":  "the guide's example of an unknown flag",
		"--ulimit": "docker run's, in limits.md",
	}
	help := runHelp(t)
	commands := map[string]bool{}
	for _, line := range strings.Split(runHelpOf(t, "help"), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(line, "   ") && !strings.HasPrefix(f[0], "-") {
			commands[strings.TrimSuffix(f[0], ",")] = true
		}
	}
	if !commands["start"] || !commands["bench"] {
		t.Fatalf("could not read the commands from help: %v", commands)
	}
	files, _ := filepath.Glob("../../docs/*.md")
	files = append(files, "../../README.md")
	flagRe := regexp.MustCompile(`(?:^|[^A-Za-z0-9-])(--[a-z][a-z0-9-]*)`)
	cmdRe := regexp.MustCompile("bin/server ([a-z][a-z-]*)")
	checked := 0
	for _, f := range files {
		if filepath.Base(f) == "BENCHMARKS.md" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, m := range flagRe.FindAllStringSubmatch(string(b), -1) {
			seen[m[1]] = true
		}
		var flags []string
		for fl := range seen {
			flags = append(flags, fl)
		}
		sort.Strings(flags)
		for _, fl := range flags {
			checked++
			if _, ok := notInHelp[fl]; ok {
				continue
			}
			if !help[fl] {
				t.Errorf("%s mentions %s, which no command's --help knows", filepath.Base(f), fl)
			}
		}
		for _, m := range cmdRe.FindAllStringSubmatch(string(b), -1) {
			if !commands[m[1]] {
				t.Errorf("%s shows `bin/server %s`, which is not a command", filepath.Base(f), m[1])
			}
		}
	}
	if checked < 50 {
		t.Fatalf("only %d flags found in the docs: is the pattern wrong?", checked)
	}
}

// runHelp returns every --flag named in `help` and in each command's --help.
func runHelp(t *testing.T) map[string]bool {
	t.Helper()
	all := runHelpOf(t, "help")
	for _, cmd := range []string{"start", "stop", "reload", "restart", "status", "reopen-logs", "connections", "bench"} {
		all += runHelpOf(t, cmd, "--help")
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`--[a-z][a-z0-9-]*`).FindAllString(all, -1) {
		known[m] = true
	}
	return known
}

func runHelpOf(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, serverBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("server %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
