package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// --loadgen wrk, against the real wrk (installed by make deps; these tests
// are skipped, saying so, only where it is absent).

// A report of wrk 4.1.0 (Debian's), run with --latency against a path that
// answered 404, with a socket errors line added as wrk prints it.
const wrkReport = `Running 1s test @ http://127.0.0.1:18193/nothere
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    63.16us  187.57us   4.13ms   97.96%
    Req/Sec    75.60k     6.95k   88.06k    70.00%
  Latency Distribution
     50%   38.00us
     75%   54.00us
     90%   72.00us
     99%    1.08ms
  74910 requests in 1.00s, 10.50MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 74900
Requests/sec:  74885.29
Transfer/sec:     10.50MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkReport)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{requests: 74910, seconds: 1, p50: 38, p99: 1080, errors: 1 + 2 + 3 + 4 + 74900}
	if r != want {
		t.Errorf("got %+v, want %+v", r, want)
	}
	for _, bad := range []string{"", "Running 1s test\n", strings.Replace(wrkReport, "99%    1.08ms", "99%    1.08xs", 1),
		strings.Replace(wrkReport, "74910 requests in 1.00s", "many requests in 1.00s", 1)} {
		if _, err := parseWrk(bad); err == nil {
			t.Errorf("no error for a report without a readable count or latency:\n%s", bad)
		}
	}
	for in, want := range map[string]float64{"123.45us": 123.45, "1.20ms": 1200, "2.00s": 2e6, "1.50m": 90e6} {
		if got, err := wrkMicros(in); err != nil || got != want {
			t.Errorf("wrkMicros(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for d, want := range map[time.Duration]int{300 * time.Millisecond: 1, time.Second: 1, 1500 * time.Millisecond: 2, 5 * time.Second: 5} {
		if got := wrkSeconds(d); got != want {
			t.Errorf("wrkSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestLoadgenOptions(t *testing.T) {
	for _, tt := range []struct {
		o       Options
		wantErr string
	}{
		{Options{Loadgen: "ab"}, `unknown load generator "ab" (want bench or wrk)`},
		{Options{Loadgen: LoadgenWrk, Scenarios: []string{"echo"}}, "--loadgen wrk drives the http scenario only"},
		{Options{Loadgen: LoadgenWrk, Scenarios: []string{"http"}}, ""},
		{Options{}, ""},
	} {
		err := tt.o.setDefaults()
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%+v: got %v, want %q", tt.o.Loadgen, err, tt.wantErr)
		}
	}
	if testing.Short() {
		return
	}
	// A missing wrk is refused before anything starts.
	useHelper(t)
	var out, progress bytes.Buffer
	o := Options{Exe: os.Args[0], Modes: []string{"base"}, Scenarios: []string{"http"}, Loadgen: LoadgenWrk,
		WrkPath: "/nonexistent/wrk", Stdout: &out, Progress: &progress}
	err := Run(context.Background(), o)
	if err == nil || err.Error() != `bench: --loadgen wrk: no wrk binary "/nonexistent/wrk" (make deps installs Debian's wrk)` {
		t.Errorf("got %v, want the one-line refusal", err)
	}
	if progress.Len() > 0 || out.Len() > 0 {
		t.Errorf("something ran before the refusal:\n%s%s", progress.String(), out.String())
	}
	if kids := children(t); len(kids) > 0 {
		t.Errorf("processes left behind: %v", kids)
	}
}

func TestRunWithWrk(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	bin, err := findWrk("")
	if err != nil {
		t.Skipf("no wrk on this machine (make deps / .ci/install-deps.sh installs it): %v", err)
	}
	useHelper(t)
	var out, progress bytes.Buffer
	o := Options{Exe: os.Args[0], Modes: []string{"process", "base"}, Workers: 2, Conns: 8, Duration: time.Second,
		Scenarios: []string{"http", "echo"}, Loadgen: LoadgenWrk, Reference: ReferenceNone, JSON: true,
		Stdout: &out, Progress: &lockedWriter{w: &progress}}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := Run(ctx, o); err != nil {
		t.Fatalf("Run: %v\n%s\n%s", err, out.String(), progress.String())
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, out.String())
	}
	if !regexp.MustCompile(`^wrk \S+: -t1 -c8 -d1s --latency URL$`).MatchString(rep.Loadgen) {
		t.Errorf("loadgen: got %q, want wrk's version and its arguments (%s)", rep.Loadgen, bin)
	}
	rows := 0
	for _, r := range rep.Results {
		rows++
		// wrk's count over wrk's duration; its latency; the server's CPU.
		// Load went through and was counted; how much is the machine's
		// business (a floor of 100 per second was a performance bound).
		if r.Ops < 1 || r.Errors != 0 || r.P50us <= 0 || r.P99us < r.P50us || r.ServerCPU <= 0 || r.LoadgenCPU <= 0 {
			t.Errorf("%s/%s: %+v", r.Scenario, r.Mode, *r)
		}
		// wrk's own duration ("N requests in 1.00s"), never below its -d1s;
		// above it by what a loaded machine delays wrk's stop (its thread
		// checks every 100 ms), not by orders of magnitude (a unit misread).
		if r.Scenario == "http" && (r.Seconds < 0.9 || r.Seconds > 3) {
			t.Errorf("http/%s: %.2f s measured, want wrk's 1 s", r.Mode, r.Seconds)
		}
		if want := map[bool]string{true: LoadgenWrk}[r.Scenario == "http"]; r.Loadgen != want {
			t.Errorf("%s/%s: driven by %q, want %q", r.Scenario, r.Mode, r.Loadgen, want)
		}
	}
	if rows != 6 {
		t.Errorf("got %d rows, want http and echo for the baseline and both modes", rows)
	}
	// The text table says which load generator drove the http rows.
	out.Reset()
	o.JSON, o.Modes, o.Scenarios = false, []string{"base"}, []string{"http"}
	if err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "http load: wrk ") {
		t.Errorf("no load generator note under the table:\n%s", out.String())
	}
	if kids := children(t); len(kids) > 0 {
		t.Errorf("processes left behind: %v", kids)
	}
}
