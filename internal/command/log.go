package command

import (
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// newLogger returns the process's logger: JSON, or console for humans,
// every line carrying role, worker id (a worker's; id < 0, the master's
// lines: none, so that a line about a worker carries its "worker" and
// "worker_pid" once) and pid.
func newLogger(out io.Writer, format, level, role string, id int) zerolog.Logger {
	if format == "console" {
		f, ok := out.(*os.File)
		color := ok && isatty.IsTerminal(f.Fd())
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly, NoColor: !color}
	}
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	ctx := zerolog.New(out).Level(lvl).With().Timestamp().Str("role", role)
	if id >= 0 {
		ctx = ctx.Int("worker", id)
	}
	return ctx.Int("pid", os.Getpid()).Logger()
}
