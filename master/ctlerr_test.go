package master

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// Errors come back across the control socket with their code: the CLI
// matches them with errors.Is, and reads the master's text unchanged.
func TestControlErrorsAreTyped(t *testing.T) {
	t.Parallel()
	m, _, _ := newSupervised(t, Options{Workers: 1, Reloadable: true}, func(slot, n int) fakeScript {
		if n == 1 {
			return fakeScript{failStart: "no config"}
		}
		return fakeScript{}
	})
	dir := t.TempDir()
	unlock, err := takePidFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctl, err := listenControl(filepath.Join(dir, SocketName), m)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()

	_, err = Call(dir, Request{Cmd: "frobnicate"}, 10*time.Second)
	var ce *ControlError
	if !errors.Is(err, ErrUnknownCommand) || !errors.As(err, &ce) || ce.Code != CodeUnknownCommand || err.Error() != `unknown command "frobnicate"` {
		t.Fatalf("unknown command: %v (%#v), want ErrUnknownCommand with the master's text", err, err)
	}
	_, err = Call(dir, Request{Cmd: "reload"}, 10*time.Second)
	if !errors.Is(err, ErrReloadFailed) || errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("failed reload: %v, want ErrReloadFailed", err)
	}
	if _, err := Call(dir, Request{Cmd: "status"}, 10*time.Second); err != nil {
		t.Fatalf("status: %v", err)
	}
	// A code this build does not know still carries the text.
	if err := (&ControlError{Code: "from-the-future", Text: "later"}); errors.Is(err, ErrReloadFailed) || err.Error() != "later" {
		t.Fatalf("unknown code: %v", err)
	}
	if !errors.Is(tagged{errors.New("server is stopping"), ErrStopping}, ErrStopping) || codeOf("reload", tagged{errors.New("x"), ErrStopping}) != CodeStopping {
		t.Fatal("a stopping server's refusal is not coded as such")
	}
}

// A context cancelled with ErrStopGraceful as its cause stops gracefully:
// every worker is drained, not killed.
func TestRunContextCause(t *testing.T) {
	t.Parallel()
	for _, graceful := range []bool{true, false} {
		m, _, _ := newSupervised(t, Options{Workers: 1}, func(int, int) fakeScript { return fakeScript{} })
		ctx, cancel := context.WithCancelCause(context.Background())
		if graceful {
			cancel(ErrStopGraceful)
		} else {
			cancel(nil)
		}
		if got := m.stopRequest(ctx); got.graceful != graceful {
			t.Fatalf("cause %v: graceful %v, want %v", context.Cause(ctx), got.graceful, graceful)
		}
	}
}
