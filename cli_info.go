package forkd

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/forkd/forkd/master"
	"github.com/forkd/forkd/master/bench"
)

func status(c *cli.Context) error {
	if c.Bool("cluster") {
		return clusterStatus(c)
	}
	resp, err := master.Call(c.String("run-dir"), master.Request{Cmd: "status"}, 30*time.Second)
	if err != nil {
		return err
	}
	st := resp.Status
	if c.Bool("json") {
		return json.NewEncoder(os.Stdout).Encode(st)
	}
	reactors := ""
	if st.ReactorNum > 0 {
		reactors = fmt.Sprintf("   reactor threads %d", st.ReactorNum)
	}
	fmt.Printf("mode %s   master pid %d   uptime %s   dispatch %s%s   connections %d   master rss %s\n",
		st.Mode, st.MasterPid, (time.Duration(st.UptimeSec) * time.Second).String(), st.Dispatch, reactors, st.Connections, mib(st.MasterRSS))
	for _, l := range st.Listeners {
		proto := l.Protocol
		if l.TLS {
			proto += ", tls"
		}
		if l.CertExpires != "" {
			proto += ", certificate " + l.CertSubject + " expires " + l.CertExpires
		}
		fmt.Printf("listener %-6s %s (%s)\n", l.Name, l.Addr, proto)
	}
	if st.MetricsAddr != "" {
		fmt.Printf("metrics  http://%s/metrics\n", st.MetricsAddr)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tPID\tSTATE\tCONNS\tREQUESTS\tRSS\tRESTARTS\tUPTIME\tBUS QUEUED/DROPPED\tNOTE")
	for _, w := range append(append(st.Workers, st.TaskWorkers...), st.Processes...) {
		note := ""
		if w.Backoff != "" {
			note = "crash loop, next try in " + w.Backoff + ": " + w.LastExit
		}
		if w.SilentSec > 0 {
			note = fmt.Sprintf("no answer to the master's ping for %.1fs: no new work; killed at 2x --worker-timeout", w.SilentSec)
		}
		reqs := fmt.Sprint(w.Requests)
		if w.Kind == "task" {
			reqs = fmt.Sprintf("%d tasks, %d queued", w.TasksDone, w.TasksQueued)
		}
		bus := fmt.Sprintf("%dB/%d", w.BusQueued+w.BusPending, w.BusDropped+w.BusDroppedOut)
		kind := w.Kind
		if w.Name != "" {
			kind += " " + w.Name
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", w.ID, kind, w.Pid, w.State, w.Connections, reqs,
			mib(w.RSS), w.Restarts, (time.Duration(w.UptimeSec) * time.Second).String(), bus, note)
	}
	return tw.Flush()
}

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }

func connections(c *cli.Context) error {
	if c.Bool("cluster") {
		return clusterConnections(c)
	}
	resp, err := master.Call(c.String("run-dir"), master.Request{Cmd: "connections"}, 30*time.Second)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if resp.Connections == nil {
			resp.Connections = []master.ConnInfo{}
		}
		return json.NewEncoder(os.Stdout).Encode(resp.Connections)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tWORKER\tLISTENER\tREMOTE\tPROTOCOL\tPATH\tSINCE\tIN\tOUT")
	for _, i := range resp.Connections {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", i.ID, i.Worker, i.Listener, i.Remote, i.Protocol, i.Path, i.Since, i.BytesIn, i.BytesOut)
	}
	fmt.Fprintf(tw, "%d connections\n", len(resp.Connections))
	return tw.Flush()
}

func (s *Server) benchCommand() *cli.Command {
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
			&cli.StringFlag{Name: "scenarios", Value: strings.Join(bench.AllScenarios, ","), Usage: "comma-separated scenarios to run (also: " + strings.Join(bench.ClusterScenarios, ", ") + ", on two nodes joined on NATS)"},
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
			&cli.BoolFlag{Name: "tuned-baseline", Usage: "give the baseline process the sysmon setting the server runs with (see docs/BENCHMARKS.md)"},
		},
		Action: func(c *cli.Context) error {
			o := bench.Options{
				Modes: split(c.String("modes")), Workers: c.Int("workers"), Duration: c.Duration("duration"),
				Conns: c.Int("conns"), Scenarios: split(c.String("scenarios")), Out: c.String("out"), Chart: c.String("chart"),
				JSON: c.Bool("json"), Stdout: os.Stdout, Progress: os.Stderr,
				IdleConns: c.Int("idle-conns"), Members: c.Int("members"),
				HTTPPath: c.String("http-path"), WSPath: c.String("ws-path"),
				HTTPListener: c.String("http-listener"), WSListener: c.String("ws-listener"),
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
			if err := s.benchListeners(&o); err != nil {
				return err
			}
			keepSysmonAwake("", nil) // the load generator and the servers it starts
			o.BaselineEnv = plainEnv()
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
			return bench.Run(ctx, o)
		},
	}
}

// benchListeners refuses at once a bench whose listeners this program
// does not have.
func (s *Server) benchListeners(o *bench.Options) error {
	for _, l := range s.Listeners {
		if l.Name != o.HTTPListener && l.Name != o.WSListener {
			o.OtherListeners = append(o.OtherListeners, l.Name)
		}
	}
	var missing, flags []string
	for _, n := range []struct{ name, flag string }{{o.HTTPListener, "--http-listener"}, {o.WSListener, "--ws-listener"}} {
		var l *Listener
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
		case n.flag == "--http-listener" && l.Protocol != HTTP:
			return fmt.Errorf("bench: listener %q is WebSocket only; --http-listener names an HTTP listener", n.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("bench: this program has no listener named %s (its listeners: %s); name the ones to load with %s",
			strings.Join(missing, " or "), s.listenerNames(), strings.Join(flags, " and "))
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
