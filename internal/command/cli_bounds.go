package command

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/forkd/forkd/master"
)

// boundsFlags are `start`'s watchdog flags (see docs/limits.md).
func boundsFlags() []cli.Flag {
	return []cli.Flag{
		altsrc.NewDurationFlag(ranged(&cli.DurationFlag{Name: "worker-timeout", Value: master.DefaultWorkerTimeout,
			Usage: "a worker silent this long (no answer to the master's ping) gets no new work; twice this long, it is killed and replaced"})),
		altsrc.NewDurationFlag(ranged(&cli.DurationFlag{Name: "request-timeout", Value: master.DefaultRequestTimeout,
			Usage: "PROCESS mode: an HTTP request its worker has not answered in this long gets 504"})),
	}
}

// boundsOptions reads boundsFlags into o, and checks every duration flag
// of durationRanges.
func boundsOptions(c *cli.Context, o *master.Options) error {
	for _, r := range durationRanges {
		if err := r.check(c.Duration(r.flag)); err != nil {
			return err
		}
	}
	o.WorkerTimeout = c.Duration("worker-timeout")
	o.RequestTimeout = c.Duration("request-timeout")
	return nil
}

// durationRange is what a duration flag of start accepts. Zero is a value
// of its own only where off is documented and safe (zeroOff); elsewhere a
// zero (which master.Options would quietly take as the default) or a
// value outside min..max is refused, naming the flag and the range.
type durationRange struct {
	flag     string
	min, max time.Duration
	zeroOff  string // what 0 means, when it may be given ("" : it may not)
}

var durationRanges = []durationRange{
	{flag: "worker-timeout", min: 100 * time.Millisecond, max: time.Hour},
	{flag: "request-timeout", min: 100 * time.Millisecond, max: 24 * time.Hour},
	{flag: "read-timeout", min: 100 * time.Millisecond, max: time.Hour},
	{flag: "idle-timeout", min: 100 * time.Millisecond, max: 24 * time.Hour},
	{flag: "reload-wait", min: 100 * time.Millisecond, max: time.Hour},
	{flag: "heartbeat-idle", min: 100 * time.Millisecond, max: 24 * time.Hour, zeroOff: "off"},
	{flag: "cluster-timeout", min: 10 * time.Millisecond, max: 10 * time.Minute},
}

func (r durationRange) check(d time.Duration) error {
	if d == 0 && r.zeroOff != "" {
		return nil
	}
	if d < r.min || d > r.max {
		return fmt.Errorf("--%s %s: want %s", r.flag, fmtDuration(d), r.text())
	}
	return nil
}

// text is the range as help and errors say it.
func (r durationRange) text() string {
	s := fmtDuration(r.min) + " to " + fmtDuration(r.max)
	if r.zeroOff != "" {
		return "0 = " + r.zeroOff + ", or " + s
	}
	return s + "; it cannot be turned off"
}

// ranged appends f's range (durationRanges) to its help text.
func ranged(f *cli.DurationFlag) *cli.DurationFlag {
	for _, r := range durationRanges {
		if r.flag == f.Name {
			f.Usage += " (" + r.text() + ")"
		}
	}
	return f
}

// fmtDuration is d without time.Duration's trailing zero units (1h, not
// 1h0m0s).
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
