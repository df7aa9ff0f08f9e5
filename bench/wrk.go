package bench

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The http scenario's load from wrk instead of bench's own load generator
// (--loadgen wrk): the method issue 18's figures were measured with (wrk
// -t1 -c64 on /hello, requests per server CPU-second). Every other
// scenario keeps bench's own load generator: wrk speaks no WebSocket.
//
// The server's CPU is measured as for any row (meter.go), over a window
// that brackets the wrk process; the requests are wrk's own count. Each
// row first gets a warm-up run of wrk, not measured, as drive's warm-up.

// Load generators of the http scenario.
const (
	LoadgenBench = "bench" // bench's own (scenarios.go); the default
	LoadgenWrk   = "wrk"   // wrk -t1 -c<conns>, when installed
)

// findWrk returns the wrk binary: path when set, else wrk on $PATH.
func findWrk(path string) (string, error) {
	if path == "" {
		path = "wrk"
	}
	bin, err := exec.LookPath(path)
	if err != nil {
		return "", fmt.Errorf("bench: --loadgen wrk: no wrk binary %q (make deps installs Debian's wrk)", path)
	}
	return bin, nil
}

// wrkSeconds is d in the whole seconds wrk's -d takes, at least 1.
func wrkSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// wrkArgs is wrk's command line for conns connections on url for secs
// seconds.
func wrkArgs(conns, secs int, url string) []string {
	return []string{"-t1", "-c" + strconv.Itoa(conns), "-d" + strconv.Itoa(secs) + "s", "--latency", url}
}

// wrkResult is what bench reads from wrk's report.
type wrkResult struct {
	requests int64
	seconds  float64 // wrk's own duration: "N requests in 5.00s"
	p50, p99 float64 // microseconds
	errors   int64   // socket errors and non-2xx/3xx responses
}

// parseWrk reads wrk's text report (run with --latency).
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var sawCount bool
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(strings.ReplaceAll(l, ",", ""))
		switch {
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			n, err1 := strconv.ParseInt(f[0], 10, 64)
			d, err2 := time.ParseDuration(f[3])
			if err1 != nil || err2 != nil {
				return r, fmt.Errorf("wrk: cannot read %q", strings.TrimSpace(l))
			}
			r.requests, r.seconds, sawCount = n, d.Seconds(), true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			us, err := wrkMicros(f[1])
			if err != nil {
				return r, err
			}
			if f[0] == "50%" {
				r.p50 = us
			} else {
				r.p99 = us
			}
		case len(f) >= 2 && f[0] == "Socket" && f[1] == "errors:":
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 3; i < len(f); i += 2 {
				n, err := strconv.ParseInt(f[i], 10, 64)
				if err != nil {
					return r, fmt.Errorf("wrk: cannot read %q", strings.TrimSpace(l))
				}
				r.errors += n
			}
		case len(f) == 5 && f[0] == "Non-2xx":
			n, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: cannot read %q", strings.TrimSpace(l))
			}
			r.errors += n
		}
	}
	if !sawCount {
		return r, errors.New("wrk: no request count in its report")
	}
	return r, nil
}

// wrkMicros converts one of wrk's latencies (123.45us, 1.20ms, 2.00s,
// 1.00m) to microseconds.
func wrkMicros(s string) (float64, error) {
	for _, u := range []struct {
		suffix string
		us     float64
	}{{"us", 1}, {"ms", 1e3}, {"s", 1e6}, {"m", 60e6}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				break
			}
			return f * u.us, nil
		}
	}
	return 0, fmt.Errorf("wrk: cannot read latency %q", s)
}

// runWrk runs wrk for secs seconds against url and returns its report and
// the CPU it used.
func (s *session) runWrk(ctx context.Context, url string, secs int) (wrkResult, time.Duration, error) {
	// Beyond its -d, wrk needs a moment to connect and to report; a wrk
	// that hangs (a server that stopped answering) is killed.
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.wrk, wrkArgs(s.o.Conns, secs, url)...)
	b, err := cmd.CombinedOutput()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		msg := strings.TrimSpace(string(b))
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		return wrkResult{}, cpu, fmt.Errorf("wrk: %w: %s", err, msg)
	}
	r, err := parseWrk(string(b))
	return r, cpu, err
}

// benchHTTPWrk is the http scenario under wrk (see above).
func (s *session) benchHTTPWrk(ctx context.Context, t *target, m *meter, r *Result) error {
	url := "http://" + t.httpAddr + t.httpPath
	secs := wrkSeconds(s.o.Duration)
	if _, _, err := s.runWrk(ctx, url, wrkSeconds(warmup(s.o.Duration))); err != nil {
		return err
	}
	m.begin(time.Duration(secs)*time.Second, "req", nil)
	wr, cpu, err := s.runWrk(ctx, url, secs)
	w := m.end()
	if err != nil {
		return err
	}
	r.Loadgen, r.Ops, r.Errors = LoadgenWrk, wr.requests, wr.errors
	r.Seconds = wr.seconds
	if r.Seconds > 0 {
		r.OpsPerSec = float64(r.Ops) / r.Seconds
	}
	r.P50us, r.P99us = wr.p50, wr.p99
	r.ServerCPU = w.serverCPU.Seconds()
	if r.ServerCPU > 0 {
		r.OpsPerCPU = float64(r.Ops) / r.ServerCPU
	}
	r.LoadgenCPU = cpu.Seconds()
	return nil
}

// wrkVersion names the wrk binary with its version ("wrk 4.1.0"), or by
// its path when it does not say.
func wrkVersion(bin string) string {
	out, _ := exec.Command(bin, "--version").CombinedOutput() // wrk exits 1 after its usage
	if f := strings.Fields(string(out)); len(f) > 1 && f[0] == "wrk" {
		v := f[1]
		if i := strings.LastIndexByte(v, '/'); i >= 0 { // Debian's "debian/4.1.0-3+b2"
			v = v[i+1:]
		}
		return "wrk " + v
	}
	return bin
}
