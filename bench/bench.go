package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
)

// Scenario names, in the order they run and are shown.
const (
	ScenarioHTTP      = "http"
	ScenarioEcho      = "echo"
	ScenarioPush      = "push"
	ScenarioBroadcast = "broadcast"
	ScenarioConnect   = "connect"
	ScenarioIdle      = "idle"
	ScenarioUIDPush   = "uid-push"
)

// AllScenarios lists every scenario run by default, in run order.
var AllScenarios = []string{ScenarioHTTP, ScenarioEcho, ScenarioPush, ScenarioUIDPush, ScenarioBroadcast, ScenarioConnect, ScenarioIdle}

// ClusterScenarios run on two nodes joined on one NATS server (see
// cluster.go); only when named in --scenarios.
var ClusterScenarios = []string{ScenarioClusterPush, ScenarioClusterBroadcast}

// knownScenarios is every scenario, in run order.
func knownScenarios() []string {
	return append(append([]string(nil), AllScenarios...), ClusterScenarios...)
}

// baselineScenarios are the scenarios the baseline serves (it has no chat).
var baselineScenarios = []string{ScenarioHTTP, ScenarioEcho, ScenarioConnect, ScenarioIdle}

// session is one Run.
type session struct {
	o     *Options
	epoch time.Time // push timestamps are nanoseconds since epoch
	nonce string    // makes room names unique per run
	tty   bool      // Progress is a terminal: one line rewritten with \r

	// fdLimit is the open-file limit of this process and of the servers
	// it starts, when it is below what the run needs (0: it is not), and
	// fdWhy what stops it being raised (fleetscen.go).
	fdLimit uint64
	fdWhy   string

	wrk string // the wrk binary driving the http scenario (--loadgen wrk); "": bench's own load
}

func newSession(o *Options) *session {
	s := &session{o: o, epoch: time.Now(),
		nonce: strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)}
	if f, ok := o.Progress.(*os.File); ok {
		s.tty = isatty.IsTerminal(f.Fd())
	}
	return s
}

// live is where the meter keeps its rewritten progress line: only on a
// terminal (elsewhere \r would pile up); other writers get a line per
// scenario from logf.
func (s *session) live() io.Writer {
	if s.tty {
		return s.o.Progress
	}
	return nil
}

// logf writes one finished progress line.
func (s *session) logf(format string, args ...any) {
	if s.o.Progress == io.Discard {
		return
	}
	line := fmt.Sprintf(format, args...)
	if s.tty {
		fmt.Fprintf(s.o.Progress, "\r\033[K%s\n", line)
	} else {
		fmt.Fprintln(s.o.Progress, line)
	}
}

type scenarioFunc func(s *session, ctx context.Context, t *target, m *meter, r *Result) error

var scenarioFuncs = map[string]scenarioFunc{
	ScenarioHTTP:      (*session).benchHTTP,
	ScenarioEcho:      (*session).benchEcho,
	ScenarioPush:      (*session).benchPush,
	ScenarioUIDPush:   (*session).benchUIDPush,
	ScenarioBroadcast: (*session).benchBroadcast,
	ScenarioConnect:   (*session).benchConnect,
	ScenarioIdle:      (*session).benchIdle,

	ScenarioClusterPush:      (*session).benchClusterPush,
	ScenarioClusterBroadcast: (*session).benchClusterBroadcast,
}

var scenarioUnits = map[string]string{
	ScenarioHTTP: "req", ScenarioEcho: "msg", ScenarioPush: "delivery", ScenarioUIDPush: "delivery",
	ScenarioBroadcast: "delivery", ScenarioConnect: "conn", ScenarioIdle: "conn",
	ScenarioClusterPush: "delivery", ScenarioClusterBroadcast: "delivery",
}

// runScenario runs scenario sc against *tp. A scenario that cannot run is
// recorded in its Result; a server that died or a cancelled ctx is an
// error that ends the whole run. *ran says whether an earlier scenario ran
// against this target: the idle scenario then gets a freshly started server,
// so that memory freed by earlier scenarios and reused by the idle
// connections does not hide what they cost; *tp is then the new server,
// which the caller stops.
func (s *session) runScenario(ctx context.Context, tp **target, sc string, ran *bool) (*Result, error) {
	t := *tp
	r := &Result{Scenario: sc, Mode: t.mode, Unit: scenarioUnits[sc]}
	if t.mode == modeBaseline && !slices.Contains(baselineScenarios, sc) {
		r.NA = true
		return r, nil
	}
	workers, note, skip := s.fitScenario(sc, t.mode)
	if skip != "" {
		r.NA, r.Skipped = true, skip
		s.logf("[%s] %s: %s", t.mode, sc, skip)
		return r, nil
	}
	if note != "" {
		r.Note = note
		s.logf("[%s] %s: %s", t.mode, sc, note)
	}
	if workers == 0 {
		workers = s.o.Workers
	}
	resize := t.cmd != nil && t.mode != modeBaseline && t.mode != modeNginx && t.workers != workers
	if sc == ScenarioIdle && *ran && t.cmd != nil || resize {
		stopErr := t.stop()
		o := *s.o
		o.Workers = workers
		nt, err := startTarget(ctx, &o, t.mode)
		if err != nil {
			return r, errors.Join(err, stopErr)
		}
		*tp, t = nt, nt
		s.logf("[%s] restarted for %s with %d workers: http %s, ws %s", t.mode, sc, t.workers, t.httpAddr, t.wsAddr)
	}
	*ran = true
	m := newMeter(ctx, t, "["+t.mode+"] "+sc, s.live())
	err := scenarioFuncs[sc](s, ctx, t, m, r)
	r.PeakRSSMiB = m.peakMiB()
	m.close()
	if err != nil {
		s.logf("[%s] %s: error: %v", t.mode, sc, err)
	} else {
		s.logf("[%s] %s: %s %s/s, p99 %s, %s per server CPU-s, %d errors", t.mode, sc,
			fmtCount(r.OpsPerSec), r.Unit, fmtLatency(r.P99us), fmtCount(r.OpsPerCPU), r.Errors)
	}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if xerr := t.exited(); xerr != nil {
		return r, fmt.Errorf("%w during scenario %s", xerr, sc)
	}
	if err != nil {
		r.Error = err.Error()
	}
	return r, nil
}

// Run starts the baseline and the server in each mode, then runs each
// scenario against each of them in turn, so that the figures a ratio
// compares are measured minutes apart at most, not a whole run apart (on
// a noisy machine the difference matters). The servers not under load sit
// idle meanwhile; each one's CPU and memory are measured on its own
// processes. Run prints the comparison, and returns an error when a server
// cannot be started or dies, when ctx is cancelled, or (after printing the
// table) when some scenario could not run.
func Run(ctx context.Context, o Options) error {
	if err := o.setDefaults(); err != nil {
		return err
	}
	if o.Exe == "" {
		return errors.New("bench: no server binary (Options.Exe)")
	}
	if o.Reference == ReferenceNginx && slices.Contains(o.Scenarios, ScenarioHTTP) {
		if _, err := findNginx(o.NginxPath); err != nil { // before anything starts
			return err
		}
	}
	s := newSession(&o)
	if o.Loadgen == LoadgenWrk {
		bin, err := findWrk(o.WrkPath) // before anything starts
		if err != nil {
			return err
		}
		s.wrk = bin
	}
	if lim, err := raiseNoFileTo(o.openFiles()); err != nil {
		// Below what the run needs: the large scenarios spread over
		// processes (fleetscen.go), or say they cannot run here.
		var le *limitError
		if !errors.As(err, &le) || lim <= 2*fileReserve(lim) {
			return err
		}
		s.fdLimit, s.fdWhy = lim, "RLIMIT_NOFILE's hard limit; "+le.how
	}
	spreadSources.Store(o.openFiles() > spreadAbove+1024)
	rep := &Report{Command: strings.Join(os.Args, " "), Machine: thisMachine(), Modes: o.Modes,
		Workers: o.Workers, Conns: o.Conns, Duration: o.Duration.String(), Scenarios: o.Scenarios}
	if s.wrk != "" {
		rep.Loadgen = wrkVersion(s.wrk) + ": " + strings.Join(wrkArgs(o.Conns, wrkSeconds(o.Duration), "URL"), " ")
	}
	if l := rep.Machine.Load1; l > 0.5*float64(rep.Machine.CPUs) {
		s.logf("[bench] warning: load average %.2f on %d CPUs: other work on this machine will skew the figures", l, rep.Machine.CPUs)
	}
	var targets []*target
	var stopErrs []error
	stopAll := func() {
		for _, t := range targets {
			if err := t.stop(); err != nil { // the figures stand; say so at the end
				s.logf("[%s] %v", t.mode, err)
				stopErrs = append(stopErrs, err)
			}
		}
		targets = nil
	}
	defer stopAll()
	for _, mode := range append([]string{modeBaseline}, o.Modes...) {
		if mode == modeBaseline && !hasBaselineScenario(o.Scenarios) {
			continue
		}
		t, err := startTarget(ctx, &o, mode)
		if err != nil {
			return err
		}
		targets = append(targets, t)
		var ps []string
		for _, p := range t.procs(ctx) {
			ps = append(ps, p.role+"="+strconv.Itoa(p.pid))
		}
		s.logf("[%s] started: http %s, ws %s, %s", mode, t.httpAddr, t.wsAddr, strings.Join(ps, " "))
		if mode != modeBaseline {
			if err := preflight(ctx, &o, t); err != nil {
				return err
			}
		}
		if mode == modeBaseline { // (started whenever http, the reference's scenario, runs)
			t, err := s.startReference(ctx, rep)
			if err != nil {
				return err
			}
			if t != nil {
				targets = append(targets, t)
			}
		}
	}
	ran := make([]bool, len(targets))
	for _, sc := range o.Scenarios {
		for i := range targets {
			if targets[i].mode == modeNginx && !slices.Contains(referenceScenarios, sc) {
				continue // nginx serves only the http scenario: no row for the others
			}
			r, err := s.runScenario(ctx, &targets[i], sc, &ran[i])
			rep.Results = append(rep.Results, r)
			if err != nil {
				return err
			}
		}
	}
	stopAll()
	rep.sortResults(o.Modes)
	rep.computeRatios()
	if err := rep.write(&o); err != nil {
		return errors.Join(append([]error{err}, stopErrs...)...)
	}
	var failed []string
	for _, r := range rep.Results {
		if r.Error != "" {
			failed = append(failed, fmt.Sprintf("%s/%s: %s", r.Mode, r.Scenario, r.Error))
		}
	}
	if len(failed) > 0 {
		stopErrs = append(stopErrs, fmt.Errorf("bench: %d scenario(s) could not run: %s", len(failed), strings.Join(failed, "; ")))
	}
	return errors.Join(stopErrs...)
}

func hasBaselineScenario(scs []string) bool {
	for _, s := range scs {
		if slices.Contains(baselineScenarios, s) {
			return true
		}
	}
	return false
}

// sortResults orders rows by scenario, then baseline, then modes as given.
func (rep *Report) sortResults(modes []string) {
	order := append([]string{modeBaseline, modeNginx}, modes...)
	slices.SortStableFunc(rep.Results, func(a, b *Result) int {
		if d := slices.Index(knownScenarios(), a.Scenario) - slices.Index(knownScenarios(), b.Scenario); d != 0 {
			return d
		}
		return slices.Index(order, a.Mode) - slices.Index(order, b.Mode)
	})
}

// computeRatios sets each row's ops-per-CPU-second ratio against the
// baseline row of the same scenario, and each mode's against the nginx
// reference row, if there is one.
func (rep *Report) computeRatios() {
	base, ref := map[string]float64{}, map[string]float64{}
	for _, r := range rep.Results {
		if r.NA || r.Error != "" || r.OpsPerCPU <= 0 {
			continue
		}
		switch r.Mode {
		case modeBaseline:
			base[r.Scenario] = r.OpsPerCPU
		case modeNginx:
			ref[r.Scenario] = r.OpsPerCPU
		}
	}
	for _, r := range rep.Results {
		if r.NA || r.Error != "" || r.OpsPerCPU <= 0 {
			continue
		}
		if b, ok := base[r.Scenario]; ok {
			v := r.OpsPerCPU / b
			r.Ratio = &v
		}
		if b, ok := ref[r.Scenario]; ok && r.Mode != modeBaseline && r.Mode != modeNginx {
			v := r.OpsPerCPU / b
			r.RatioNginx = &v
		}
	}
}
