package bench

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/forkd/forkd/internal/command"
	"github.com/forkd/forkd/internal/sysmon"
)

// The bench commands join a program's CLI when the program imports this
// package (the built-in application does; a program of yours does with
// `import _ "github.com/forkd/forkd/bench"`). A program that does not
// links neither the load generator nor its charting library.
func init() {
	command.Register(func(p *command.Program) []*cli.Command {
		return []*cli.Command{benchCommand(p), baselineCommand(), clientCommand()}
	})
}

// baselineCommand serves the baseline bench compares the modes with: the
// bench process starts the program's own binary with it.
func baselineCommand() *cli.Command {
	return &cli.Command{Name: "bench-baseline", Hidden: true, Flags: []cli.Flag{&cli.StringFlag{Name: "http"}, &cli.StringFlag{Name: "ws"}},
		Action: func(c *cli.Context) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return serveBaseline(ctx, c.String("http"), c.String("ws"), announceBaseline)
		}}
}

func benchCommand(s *command.Program) *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "start this program in each mode on free loopback ports, load it, and compare",
		Description: "Scenarios: http (GET --http-path, 200), echo, connect and idle (WebSocket --ws-path sending every\n" +
			"message back), push and broadcast (the built-in chat protocol: /chat, /push, /broadcast).\n" +
			"A program that does not serve what a chosen scenario needs is refused at once, saying what is missing.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "modes", Value: "process,base", Usage: "comma-separated modes to compare (process, base)"},
			&cli.IntFlag{Name: "workers", Value: 2, Usage: "worker processes of each server started"},
			&cli.DurationFlag{Name: "duration", Value: 5 * time.Second, Usage: "per scenario and mode"},
			&cli.IntFlag{Name: "conns", Value: 64, Usage: "concurrent client connections driving the load"},
			&cli.StringFlag{Name: "scenarios", Value: strings.Join(AllScenarios, ","), Usage: "comma-separated scenarios to run (also: " + strings.Join(ClusterScenarios, ", ") + ", on two nodes joined on NATS)"},
			&cli.StringFlag{Name: "http-path", Value: "/hello", Usage: "http scenario: the GET path (it must answer 200)"},
			&cli.StringFlag{Name: "ws-path", Value: "/echo", Usage: "echo, connect, idle scenarios: a WebSocket path that sends every message back"},
			&cli.StringFlag{Name: "http-listener", Value: "http", Usage: "the listener serving --http-path"},
			&cli.StringFlag{Name: "ws-listener", Value: "ws", Usage: "the listener serving --ws-path (may be the HTTP one)"},
			&cli.StringFlag{Name: "ports", Usage: "LOW-HIGH: take the servers' ports from this range", DefaultText: "any free port"},
			&cli.StringFlag{Name: "out", Usage: "write a markdown report"},
			&cli.StringFlag{Name: "chart", Usage: "write a chart (.svg or .png)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			&cli.IntFlag{Name: "idle-conns", Value: 10000, Usage: "idle scenario: WebSocket connections held open"},
			&cli.IntFlag{Name: "members", Value: 1000, Usage: "broadcast scenario: room size"},
			&cli.StringFlag{Name: "reference", Value: ReferenceAuto, Usage: "http scenario: a reference row from a C server measured the same way: nginx (an error if it cannot run), auto (nginx when installed), none"},
			&cli.StringFlag{Name: "nginx", Usage: "the nginx binary of the reference row", DefaultText: "nginx on $PATH, or /usr/sbin/nginx"},
			&cli.StringFlag{Name: "loadgen", Value: LoadgenBench, Usage: "http scenario's load generator: bench (its own) or wrk (wrk -t1 -c<conns>, as issue 18's figures were measured; needs wrk)"},
			&cli.StringFlag{Name: "wrk", Usage: "the wrk binary of --loadgen wrk", DefaultText: "wrk on $PATH"},
			&cli.BoolFlag{Name: "tuned-baseline", Usage: "give the baseline process the sysmon setting the server runs with (see docs/BENCHMARKS.md)"},
		},
		Action: func(c *cli.Context) error {
			o := Options{
				Modes: split(c.String("modes")), Workers: c.Int("workers"), Duration: c.Duration("duration"),
				Conns: c.Int("conns"), Scenarios: split(c.String("scenarios")), Out: c.String("out"), Chart: c.String("chart"),
				JSON: c.Bool("json"), Stdout: os.Stdout, Progress: os.Stderr,
				IdleConns: c.Int("idle-conns"), Members: c.Int("members"),
				HTTPPath: c.String("http-path"), WSPath: c.String("ws-path"),
				HTTPListener: c.String("http-listener"), WSListener: c.String("ws-listener"),
				Reference: c.String("reference"), NginxPath: c.String("nginx"),
				Loadgen: c.String("loadgen"), WrkPath: c.String("wrk"),
			}
			if p := c.String("ports"); p != "" {
				lo, hi, ok := strings.Cut(p, "-")
				var err1, err2 error
				o.PortMin, err1 = strconv.Atoi(lo)
				o.PortMax, err2 = strconv.Atoi(hi)
				if !ok || err1 != nil || err2 != nil || o.PortMin < 1 || o.PortMax > 65535 || o.PortMin > o.PortMax {
					return fmt.Errorf("bench: --ports %q: want LOW-HIGH, e.g. 20000-20100", p)
				}
			}
			if err := benchListeners(s, &o); err != nil {
				return err
			}
			sysmon.KeepAwake("", nil) // the load generator and the servers it starts
			o.BaselineEnv = sysmon.PlainEnv()
			if c.Bool("tuned-baseline") {
				o.BaselineEnv = os.Environ()
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			o.Exe = exe
			// Ctrl-C must reach bench, so it stops the servers it started.
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return Run(ctx, o)
		},
	}
}

// benchListeners refuses at once a bench whose listeners this program
// does not have.
func benchListeners(s *command.Program, o *Options) error {
	for _, l := range s.Listeners {
		if l.Name != o.HTTPListener && l.Name != o.WSListener {
			o.OtherListeners = append(o.OtherListeners, l.Name)
		}
	}
	var missing, flags []string
	for _, n := range []struct{ name, flag string }{{o.HTTPListener, "--http-listener"}, {o.WSListener, "--ws-listener"}} {
		var l *command.Listener
		for _, x := range s.Listeners {
			if x.Name == n.name {
				l = x
			}
		}
		switch {
		case l == nil:
			if !slices.Contains(missing, strconv.Quote(n.name)) {
				missing = append(missing, strconv.Quote(n.name))
			}
			flags = append(flags, n.flag)
		case n.flag == "--http-listener" && l.Protocol != command.HTTP:
			return fmt.Errorf("bench: listener %q is WebSocket only; --http-listener names an HTTP listener", n.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("bench: this program has no listener named %s (its listeners: %s); name the ones to load with %s",
			strings.Join(missing, " or "), s.ListenerNames(), strings.Join(flags, " and "))
	}
	return nil
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
