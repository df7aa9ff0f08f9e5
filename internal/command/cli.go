package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
	"gopkg.in/yaml.v3"

	"github.com/forkd/forkd/internal/sysmon"
	"github.com/forkd/forkd/master"
)

// Run is the program's main: in the master (or a command such as `stop`)
// it runs the CLI on args (os.Args); in a worker process it runs the
// worker. It returns an error for the caller to print and exit 1 on; it
// never calls os.Exit.
func (s *Program) Run(args []string) error {
	if os.Getenv(master.EnvRole) == master.RoleWorker {
		return s.runWorker()
	}
	s.args = args
	return s.cli().Run(args)
}

func startFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "YAML config file; its keys are these flags' names (flags win)"},
		altsrc.NewStringFlag(&cli.StringFlag{Name: "mode", Value: "process", Usage: "process or base"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "workers", Value: runtime.NumCPU(), Usage: "worker processes"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "task-workers", Value: 0, Usage: "task worker processes"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "http", Usage: "address of the listener named http"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ws", Usage: "address of the listener named ws"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "listen", Usage: "NAME=ADDR for any other declared listener"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "no-http-upgrade", Usage: "refuse WebSocket upgrades on HTTP ports"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "reactor-num", Usage: "PROCESS mode: threads running the master's reactor", DefaultText: "half the CPUs, at least 1"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "dispatch", Value: "fd", Usage: "PROCESS mode routing: round-robin, fd, ip, idle"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-file", Usage: "log file (default stderr; daemon: RUN-DIR/server.log)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-format", Value: "json", Usage: "json or console"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn, error"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "daemon", Aliases: []string{"d"}, Usage: "detach; return once the server is ready"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-request", Usage: "replace a worker after N requests/messages", DefaultText: "0, never"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "max-package-size", Value: "10MiB", Usage: "largest request body / WebSocket message"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "max-send-buffer", Value: "1MiB", Usage: "queued output per connection"}),
		altsrc.NewDurationFlag(ranged(&cli.DurationFlag{Name: "heartbeat-idle", Usage: "close connections silent this long (WebSockets; idle keep-alive HTTP too)", DefaultText: "0, never"})),
		altsrc.NewDurationFlag(ranged(&cli.DurationFlag{Name: "read-timeout", Value: 15 * time.Second, Usage: "time to read one HTTP request, headers and body (slowloris; the first request's clock starts at accept); 408 after"})),
		altsrc.NewDurationFlag(ranged(&cli.DurationFlag{Name: "idle-timeout", Value: 60 * time.Second, Usage: "keep-alive connections idle this long are closed"})),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-conn", Usage: "connections per process before 503/1013", DefaultText: "ulimit -n"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "run-dir", Value: "./run", Usage: "pid file, control socket, logs"}),
		altsrc.NewDurationFlag(ranged(&cli.DurationFlag{Name: "reload-wait", Value: 10 * time.Second, Usage: "how long a draining worker may finish its work"})),
		watchFlag(),
	}, append(append(append(append(boundsFlags(), opsFlags()...), securityFlags()...), clusterFlags()...), usersFlags()...)...)
}

var runDirFlag = &cli.StringFlag{Name: "run-dir", Value: "./run", Usage: "pid file, control socket, logs"}

func (s *Program) cli() *cli.App {
	sf := startFlags()
	s.describeListenerFlags(sf)
	app := &cli.App{
		Name:           s.progName(),
		Usage:          s.usage(),
		ExitErrHandler: func(*cli.Context, error) {}, // errors go back to main
		Commands: []*cli.Command{
			{Name: "start", Usage: "start the server", Description: s.listenersHelp(), Flags: sf, Before: configSource(sf), Action: s.start},
			{Name: "stop", Usage: "stop the server (-g: gracefully)", Flags: []cli.Flag{runDirFlag,
				&cli.BoolFlag{Name: "graceful", Aliases: []string{"g"}, Usage: "finish in-flight work, close WebSockets with 1001"}}, Action: stop},
			{Name: "reload", Usage: "rolling restart of the workers, one at a time", Flags: []cli.Flag{runDirFlag,
				&cli.BoolFlag{Name: "tasks-only", Usage: "reload only the task workers (Swoole's SIGUSR2)"},
				&cli.BoolFlag{Name: "tls-only", Usage: "only re-read the TLS certificates: no worker is replaced, no connection touched"}}, Action: reload},
			{Name: "restart", Usage: "stop, then start again with the running server's settings (flags given here win)", Description: s.listenersHelp(),
				Flags: append(sf, &cli.BoolFlag{Name: "graceful", Aliases: []string{"g"}, Usage: "stop gracefully"}), Action: s.restart},
			{Name: "status", Usage: "mode, master and workers (--cluster: every node of the cluster)", Flags: []cli.Flag{runDirFlag, &cli.BoolFlag{Name: "json"}, clusterListFlag}, Action: status},
			reopenLogsCommand(),
			{Name: "connections", Usage: "every open connection (--cluster: of every node)", Flags: []cli.Flag{runDirFlag, &cli.BoolFlag{Name: "json"}, clusterListFlag}, Action: connections},
		},
	}
	for _, f := range hooks() {
		app.Commands = append(app.Commands, f(s)...)
	}
	s.polishCLI(app)
	return app
}

func configSource(flags []cli.Flag) cli.BeforeFunc {
	load := altsrc.InitInputSourceWithContext(flags, altsrc.NewYamlSourceFromFlagFunc("config"))
	return func(c *cli.Context) error {
		if c.String("config") == "" {
			return nil
		}
		if err := load(c); err != nil {
			// altsrc nests its errors over several lines: keep the innermost.
			msg := err.Error()
			if i := strings.LastIndex(msg, "inner error:"); i >= 0 {
				msg = msg[i+len("inner error:"):]
			}
			msg = strings.Trim(strings.Join(strings.Fields(msg), " "), "'")
			return fmt.Errorf("config %s: %s", c.String("config"), msg)
		}
		return unknownConfigKeys(c.String("config"), flags)
	}
}

// unknownConfigKeys refuses a config file key that names no flag: altsrc
// skips it, so a typo ("wokers: 8") used to start the server on the
// default quietly.
func unknownConfigKeys(file string, flags []cli.Flag) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("config %s: %w", file, err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(b, &keys); err != nil {
		return fmt.Errorf("config %s: %w", file, err)
	}
	known := map[string]bool{}
	for _, f := range flags {
		for _, n := range f.Names() {
			known[n] = true
		}
	}
	var bad []string
	for k := range keys {
		if !known[k] {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("config %s: unknown key %q (the keys are start's flag names; see start --help)", file, bad[0])
	}
	return nil
}

// loadOptions parses args as `start` would (its flags, and the YAML file
// --config names) into master options, and starts nothing. The config
// parser's fuzz test enters here; `start` runs the same configSource and
// options.
func (s *Program) loadOptions(args []string) (master.Options, error) {
	sf := startFlags()
	var o master.Options
	app := &cli.App{
		Name:           "forkd",
		Flags:          sf,
		Before:         configSource(sf),
		HideHelp:       true,
		Writer:         io.Discard,
		ErrWriter:      io.Discard,
		ExitErrHandler: func(*cli.Context, error) {},
		Action: func(c *cli.Context) (err error) {
			o, err = s.options(c)
			return err
		},
	}
	err := app.Run(append([]string{"forkd"}, args...))
	return o, err
}

// options turns the start flags into master options.
func (s *Program) options(c *cli.Context) (master.Options, error) {
	o := master.Options{
		Mode: c.String("mode"), Workers: c.Int("workers"), TaskWorkers: c.Int("task-workers"),
		Dispatch: c.String("dispatch"), ReactorNum: c.Int("reactor-num"), RunDir: c.String("run-dir"), MaxRequest: c.Int("max-request"),
		HeartbeatIdle: c.Duration("heartbeat-idle"), MaxConns: c.Int("max-conn"), ReloadWait: c.Duration("reload-wait"),
		ReadTimeout: c.Duration("read-timeout"), IdleTimeout: c.Duration("idle-timeout"),
		LogFormat: c.String("log-format"), LogLevel: c.String("log-level"), Reloadable: !s.NoReload,
	}
	if err := boundsOptions(c, &o); err != nil {
		return o, err
	}
	switch o.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return o, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.LogLevel)
	}
	if o.LogFormat != "json" && o.LogFormat != "console" {
		return o, fmt.Errorf("--log-format %q: want json or console", o.LogFormat)
	}
	// Both took a negative value as 0 (the default; off) quietly.
	if o.MaxConns < 0 {
		return o, fmt.Errorf("--max-conn must not be negative, got %d", o.MaxConns)
	}
	if o.MaxRequest < 0 {
		return o, fmt.Errorf("--max-request must not be negative, got %d", o.MaxRequest)
	}
	if err := usersOptions(c, &o); err != nil {
		return o, err
	}
	var err error
	if o.MaxPackageSize, err = parseSize(c.String("max-package-size")); err != nil {
		return o, fmt.Errorf("--max-package-size: %w", err)
	}
	if o.MaxSendBuffer, err = parseSize(c.String("max-send-buffer")); err != nil {
		return o, fmt.Errorf("--max-send-buffer: %w", err)
	}
	if len(s.Listeners) == 0 {
		return o, errors.New("the server declares no listeners")
	}
	over := map[string]string{}
	for _, kv := range c.StringSlice("listen") {
		name, addr, ok := strings.Cut(kv, "=")
		if !ok {
			return o, fmt.Errorf("--listen %q: want NAME=ADDR", kv)
		}
		over[name] = addr
	}
	if a := c.String("http"); a != "" {
		over["http"] = a
	}
	if a := c.String("ws"); a != "" {
		over["ws"] = a
	}
	seen := map[string]bool{}
	for _, l := range s.Listeners {
		if seen[l.Name] {
			return o, fmt.Errorf("two listeners are named %q", l.Name)
		}
		seen[l.Name] = true
		ml := master.Listener{Name: l.Name, Addr: l.Addr, Protocol: "http", Upgrade: !l.NoUpgrade && !c.Bool("no-http-upgrade")}
		if l.Protocol == WebSocket {
			ml.Protocol, ml.Upgrade = "websocket", false
		}
		if a, ok := over[l.Name]; ok {
			ml.Addr = a
			delete(over, l.Name)
		}
		o.Listeners = append(o.Listeners, ml)
	}
	for name := range over {
		flag := "--listen " + name + "=ADDR"
		if (name == "http" || name == "ws") && c.String(name) != "" {
			flag = "--" + name
		}
		return o, fmt.Errorf("%s: this program has no listener named %q (its listeners: %s)", flag, name, s.listenerNames())
	}
	if o.MaxConns <= 0 {
		o.MaxConns = int(master.RaiseNoFile()) - 64
	}
	if err := s.opsOptions(c, &o); err != nil {
		return o, err
	}
	if err := s.securityOptions(c, &o); err != nil {
		return o, err
	}
	if err := clusterOptions(c, &o); err != nil {
		return o, err
	}
	return o, nil
}

func (s *Program) start(c *cli.Context) (err error) {
	argv := s.startArgv()
	daemonChild := os.Getenv(master.EnvRole) == master.RoleMaster
	var report func(err error, lines []string)
	if daemonChild {
		// Whatever stops this master before it is ready, the `start -d`
		// waiting for it prints the reason.
		report = readyPipe()
		defer func() {
			if err != nil {
				report(err, nil)
			}
		}()
	}
	o, err := s.options(c)
	if err != nil {
		return err
	}
	argv = handOffToken(c, argv) // cli_handoff.go: the token leaves the command line
	if c.Bool("daemon") && !daemonChild {
		if _, err := master.New(o); err != nil { // the checks New makes, before detaching
			return err
		}
		return daemonize(o.RunDir, c.String("log-file"), title(o), argv)
	}
	sysmon.KeepAwake(title(o), append([]string{s.progArg()}, argv...))
	var out io.Writer = os.Stderr
	logFile := c.String("log-file")
	if logFile == "" && daemonChild {
		logFile = filepath.Join(o.RunDir, "server.log")
	}
	if logFile != "" {
		if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
			return err
		}
		if daemonChild {
			if err := master.CheckRunDir(o.RunDir); err != nil {
				return err
			}
		}
		f, err := master.OpenNoFollow("log file", logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
		o.LogFile = logFile
	}
	o.Log = newLogger(out, o.LogFormat, o.LogLevel, "master", -1)
	o.Output = out
	o.Exe, err = os.Executable()
	if err != nil {
		return err
	}
	o.Args = redactArgs(argv)
	if daemonChild {
		signal.Ignore(syscall.SIGHUP)
	}
	var m *master.Master
	recorded := false
	var watcher sync.WaitGroup // the --watch goroutine ends before start returns
	o.Ready = func(err error) {
		if err != nil {
			return // Run returns it
		}
		addrs := m.Addrs()
		if werr := s.writeStartRecord(o.RunDir, argv, &o, addrs); werr != nil {
			o.Log.Warn().Err(werr).Msg("restart will not know how this server was started")
		} else {
			recorded = true
		}
		asked := make([]string, len(o.Listeners))
		tls := make([]bool, len(o.Listeners))
		for i, l := range o.Listeners {
			asked[i] = l.Addr
			tls[i] = l.TLSCert != "" || l.TLSConfig != nil
		}
		lines := s.readyLines(addrs, asked, tls)
		if daemonChild {
			report(nil, lines)
		} else {
			for _, l := range lines {
				fmt.Println(l)
			}
		}
		if c.Bool("watch") {
			watcher.Add(1)
			go func() {
				defer watcher.Done()
				s.watch(m, o.Exe, o.Log)
			}()
		}
	}
	m, err = master.New(o)
	if err != nil {
		return err
	}
	defer sysmon.StartProfile("master", &o.Log)()
	// Signals become the master's context (SIGQUIT: a graceful stop, as
	// its cause; SIGINT, SIGTERM: stop now) or a reload; the loop and the
	// reloads it starts end before start returns.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, SigReopenLogs)
	if !daemonChild {
		// SIGHUP (the terminal closed; or nginx's reload, sent out of habit)
		// stops a foreground server as SIGTERM does, rather than killing it
		// on the spot with its workers under their connections. A daemon
		// ignores it (above).
		signal.Notify(sigs, syscall.SIGHUP)
	}
	defer signal.Stop(sigs)
	var sigWork sync.WaitGroup
	runDone := make(chan struct{}) // Run returned (it may fail before m.Done closes)
	sigWork.Add(1)
	go func() {
		defer sigWork.Done()
		for {
			select {
			case <-m.Done():
				return
			case <-runDone:
				return
			case sig := <-sigs:
				switch sig {
				case syscall.SIGUSR1, syscall.SIGUSR2:
					sigWork.Add(1)
					go func() {
						defer sigWork.Done()
						if _, err := m.Reload(sig == syscall.SIGUSR2); err != nil {
							o.Log.Error().Err(err).Msg("reload failed")
						}
					}()
				case SigReopenLogs:
					sigWork.Add(1)
					go func() {
						defer sigWork.Done()
						if err := m.ReopenLogs(); err != nil {
							o.Log.Error().Err(err).Msg("reopen logs failed")
						}
					}()
				case syscall.SIGQUIT:
					cancel(master.ErrStopGraceful)
				default:
					cancel(nil)
				}
			}
		}
	}()
	err = m.Run(ctx)
	close(runDone)
	sigWork.Wait()
	watcher.Wait()
	if recorded {
		os.Remove(filepath.Join(o.RunDir, StartRecordName))
	}
	return err
}

// startArgv is what this `start` runs with, without the program name: the
// command line, or what restart merged.
func (s *Program) startArgv() []string {
	if s.startArgs != nil {
		return s.startArgs
	}
	if len(s.args) > 1 {
		return s.args[1:]
	}
	return os.Args[1:]
}
