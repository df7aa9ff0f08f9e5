package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const (
	defaultIdleConns        = 10000
	defaultBroadcastMembers = 1000
)

// Options configure Run. Zero fields take the defaults shown.
type Options struct {
	Exe       string        // server binary to start (`start`, `status`, `stop`, `bench-baseline`); required
	Modes     []string      // "process", "base"; default both
	Workers   int           // default 2
	Duration  time.Duration // measured window per scenario per mode; default 5s
	Conns     int           // concurrent client connections; default 64
	Scenarios []string      // default AllScenarios
	Out       string        // optional markdown report path
	Chart     string        // optional chart path, .svg or .png
	JSON      bool          // print the Report as JSON instead of the table
	Stdout    io.Writer     // table or JSON; default os.Stdout
	Progress  io.Writer     // a progress line rewritten with \r; default none

	IdleConns int // idle scenario: connections held open; default 10,000
	Members   int // broadcast scenario: room size; default 1,000

	// What a user's own program serves: the HTTP scenario's GET path
	// (default /hello, answering 200), the WebSocket echo path (default
	// /echo, sending every message back), and the names of the listeners
	// they are on (default http and ws; others are set with --listen).
	HTTPPath, WSPath         string
	HTTPListener, WSListener string
	// OtherListeners are the program's further listeners: each server
	// started puts them on free ports too (their defaults would collide).
	OtherListeners []string
	// PortMin..PortMax (both 0: any) is where the servers' ports are taken.
	PortMin, PortMax int

	// Reference adds a reference server's row to the http scenario:
	// ReferenceNginx (an error when nginx cannot run), ReferenceAuto (nginx
	// when it is installed; the command's default), "" or ReferenceNone
	// (none). NginxPath is the nginx binary (default: nginx on $PATH, or
	// /usr/sbin/nginx). See nginx.go.
	Reference string
	NginxPath string

	// Loadgen is the http scenario's load generator: LoadgenBench ("":
	// bench's own) or LoadgenWrk (wrk -t1 -c<Conns>, see wrk.go; the
	// other scenarios keep bench's own). WrkPath is the wrk binary
	// (default: wrk on $PATH).
	Loadgen string
	WrkPath string

	// BaselineEnv is the baseline process's environment; nil: this
	// process's. (The server re-executes itself with a runtime setting the
	// baseline, a plain fasthttp process, does not get unless asked.)
	BaselineEnv []string

	// Tests shorten the idle scenario's settling pause.
	idleSettle   time.Duration
	readyTimeout time.Duration
}

func (o *Options) setDefaults() error {
	if len(o.Modes) == 0 {
		o.Modes = []string{"process", "base"}
	}
	for _, m := range o.Modes {
		if m != "process" && m != "base" {
			return fmt.Errorf("bench: unknown mode %q (want process or base)", m)
		}
	}
	if len(o.Scenarios) == 0 {
		o.Scenarios = AllScenarios
	}
	for _, s := range o.Scenarios {
		if !slices.Contains(knownScenarios(), s) {
			return fmt.Errorf("bench: unknown scenario %q (want %s)", s, strings.Join(knownScenarios(), ", "))
		}
	}
	// Run scenarios in the canonical order whatever order they were given in.
	var ordered []string
	for _, s := range knownScenarios() {
		if slices.Contains(o.Scenarios, s) {
			ordered = append(ordered, s)
		}
	}
	o.Scenarios = ordered
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Conns <= 0 {
		o.Conns = 64
	}
	if o.Chart != "" {
		if ext := strings.ToLower(filepath.Ext(o.Chart)); ext != ".svg" && ext != ".png" {
			return fmt.Errorf("bench: chart %q: want a .svg or .png file name", o.Chart)
		}
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.IdleConns <= 0 {
		o.IdleConns = defaultIdleConns
	}
	if o.Members <= 0 {
		o.Members = defaultBroadcastMembers
	}
	if o.HTTPPath == "" {
		o.HTTPPath = "/hello"
	}
	if o.WSPath == "" {
		o.WSPath = "/echo"
	}
	if !strings.HasPrefix(o.HTTPPath, "/") || !strings.HasPrefix(o.WSPath, "/") {
		return fmt.Errorf("bench: --http-path and --ws-path start with /")
	}
	if o.HTTPListener == "" {
		o.HTTPListener = "http"
	}
	if o.WSListener == "" {
		o.WSListener = "ws"
	}
	if o.PortMin < 0 || o.PortMax > 65535 || o.PortMin > o.PortMax || (o.PortMin == 0) != (o.PortMax == 0) {
		return fmt.Errorf("bench: bad port range %d-%d", o.PortMin, o.PortMax)
	}
	switch o.Loadgen {
	case "":
		o.Loadgen = LoadgenBench
	case LoadgenBench:
	case LoadgenWrk:
		if !slices.Contains(o.Scenarios, ScenarioHTTP) {
			return fmt.Errorf("bench: --loadgen wrk drives the http scenario only; add http to --scenarios")
		}
	default:
		return fmt.Errorf("bench: unknown load generator %q (want %s or %s)", o.Loadgen, LoadgenBench, LoadgenWrk)
	}
	switch o.Reference {
	case "":
		o.Reference = ReferenceNone
	case ReferenceNone, ReferenceAuto, ReferenceNginx:
	default:
		return fmt.Errorf("bench: unknown reference %q (want %s, %s or %s)", o.Reference, ReferenceAuto, ReferenceNginx, ReferenceNone)
	}
	if o.idleSettle <= 0 {
		o.idleSettle = time.Second
	}
	if o.readyTimeout <= 0 {
		o.readyTimeout = readyTimeout
	}
	return nil
}

// openFiles is how many open files the scenarios need in this process (the
// load generator's end of every connection), and in a server it starts
// (which inherits the limit): PROCESS mode's master holds every
// connection.
func (o *Options) openFiles() uint64 {
	n := 0
	for _, sc := range o.Scenarios {
		switch sc {
		case ScenarioIdle:
			n = max(n, o.IdleConns)
		case ScenarioBroadcast:
			n = max(n, o.Members)
		}
	}
	return uint64(n) + 1024
}
