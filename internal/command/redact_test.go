package command

import (
	"strings"
	"testing"
)

func TestRedactArgs(t *testing.T) {
	in := []string{"start", "--api-token", "sekret", "--http", ":1", "-api-token=sekret2", "--api-token-file", "/x"}
	got := strings.Join(redactArgs(in), " ")
	want := "start --api-token REDACTED --http :1 --api-token=REDACTED --api-token-file /x"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if strings.Join(in, " ") != "start --api-token sekret --http :1 -api-token=sekret2 --api-token-file /x" {
		t.Errorf("redactArgs changed its input")
	}
}
