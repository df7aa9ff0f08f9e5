package command

import (
	"fmt"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/forkd/forkd/master"
)

// SigReopenLogs makes the master and every worker reopen --log-file (as
// `server reopen-logs` does): SIGRTMIN+1, signal 35. Not SIGUSR1/SIGUSR2
// (reload), not SIGHUP (it ends a foreground server with its terminal),
// and not SIGRTMIN itself, which Swoole uses: on Linux that is signal 34,
// which the Go runtime keeps for itself (musl's SIGSYNCCALL) and never lets
// a program catch. `kill -s RTMIN+1 PID` (or `kill -35 PID`) sends it.
const SigReopenLogs = syscall.Signal(35)

// opsFlags are `start`'s flags for running in production (docs/operations.md).
func opsFlags() []cli.Flag {
	return []cli.Flag{
		altsrc.NewStringFlag(&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus /metrics on ADDR, e.g. 127.0.0.1:9100 (default: off)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "name", Usage: "name in every process title, as in forkd: worker 0 [NAME] (default: the binary's name)"}),
	}
}

// opsOptions reads the flags of opsFlags into o.
func (s *Program) opsOptions(c *cli.Context, o *master.Options) error {
	o.MetricsAddr = c.String("metrics")
	o.Name = c.String("name")
	if o.Name == "" {
		o.Name = master.DefaultName()
	}
	var err error
	o.Processes, err = s.processNames()
	return err
}

// title is the master's process title for o.
func title(o master.Options) string { return master.MasterTitle(o.Name, o.Mode, o.Workers) }

func reopenLogs(c *cli.Context) error {
	if _, err := master.Call(c.String("run-dir"), master.Request{Cmd: "reopen-logs"}, time.Minute); err != nil {
		return err
	}
	fmt.Println("log file reopened by the master and every worker") // a result: stdout, as every command's
	return nil
}

func reopenLogsCommand() *cli.Command {
	return &cli.Command{Name: "reopen-logs", Usage: "reopen --log-file in every process (logrotate's postrotate; signal: RTMIN+1)",
		Flags: []cli.Flag{runDirFlag}, Action: reopenLogs}
}
