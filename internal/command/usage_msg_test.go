package command

import (
	"errors"
	"testing"
)

// TestUsageMsg: the flag package's words, as a user of long flags reads
// them ("-workers" was shown for --workers).
func TestUsageMsg(t *testing.T) {
	for in, want := range map[string]string{
		"flag provided but not defined: -bogus":                  "unknown flag --bogus",
		"flag provided but not defined: -x":                      "unknown flag -x",
		`invalid value "abc" for flag -workers: parse error`:     `--workers "abc": not a valid value (parse error)`,
		`invalid value "1x" for flag -read-timeout: parse error`: `--read-timeout "1x": not a valid value (parse error)`,
		`invalid boolean value "maybe" for -json: parse error`:   `--json "maybe": not a valid value (parse error)`,
		"something else": "something else",
	} {
		if got := usageMsg(errors.New(in)); got != want {
			t.Errorf("usageMsg(%q) = %q, want %q", in, got, want)
		}
	}
}
