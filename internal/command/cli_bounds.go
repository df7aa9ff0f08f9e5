package command

import (
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/forkd/forkd/master"
)

// boundsFlags are `start`'s watchdog flags (see docs/limits.md).
func boundsFlags() []cli.Flag {
	return []cli.Flag{
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "worker-timeout", Value: master.DefaultWorkerTimeout,
			Usage: "a worker silent this long (no answer to the master's ping) gets no new work; twice this long, it is killed and replaced"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "request-timeout", Value: master.DefaultRequestTimeout,
			Usage: "PROCESS mode: an HTTP request its worker has not answered in this long gets 504"}),
	}
}

// boundsOptions reads boundsFlags into o.
func boundsOptions(c *cli.Context, o *master.Options) {
	o.WorkerTimeout = c.Duration("worker-timeout")
	o.RequestTimeout = c.Duration("request-timeout")
}
