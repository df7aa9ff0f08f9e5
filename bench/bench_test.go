package bench

import (
	"bufio"
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperMain(os.Args[1:]))
	}
	goleak.VerifyTestMain(m,
		// fasthttp's Date header refresher lives for the process's life.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		// fasthttp's worker-pool cleaner notices Shutdown only after its
		// next sleep (MaxIdleWorkerDuration), then exits.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"))
}

func TestHistogramPercentiles(t *testing.T) {
	var h histogram
	if got := h.percentile(0.5); got != 0 {
		t.Fatalf("empty p50: got %v, want 0", got)
	}
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	tests := []struct {
		name string
		q    float64
		want time.Duration
	}{
		{"p50", 0.50, 5000 * time.Microsecond},
		{"p90", 0.90, 9000 * time.Microsecond},
		{"p99", 0.99, 9900 * time.Microsecond},
		{"p100", 1, 10000 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := h.percentile(tt.q)
			if rel := math.Abs(float64(got-tt.want)) / float64(tt.want); rel > 1.0/histSub {
				t.Errorf("got %v, want %v (within %.1f%%)", got, tt.want, 100.0/histSub)
			}
		})
	}
	var a, b histogram
	a.record(time.Millisecond)
	b.record(3 * time.Millisecond)
	b.record(3 * time.Millisecond)
	a.merge(&b)
	if a.count() != 3 {
		t.Errorf("merged count: got %d, want 3", a.count())
	}
	if got := a.percentile(0.5); got < 2900*time.Microsecond || got > 3*time.Millisecond {
		t.Errorf("merged p50: got %v, want ~3ms", got)
	}
	var z histogram
	z.record(-time.Second) // clock oddity: counted as zero, not a panic
	if z.percentile(1) != 0 {
		t.Errorf("negative duration: got %v, want 0", z.percentile(1))
	}
}

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<22; v += 1 + v/97 {
		i := bucketOf(v)
		if i < prev {
			t.Fatalf("bucketOf(%d) = %d, below the previous %d", v, i, prev)
		}
		prev = i
		mid := bucketValue(i)
		if v >= histSub {
			if rel := math.Abs(float64(mid)-float64(v)) / float64(v); rel > 1.0/histSub {
				t.Fatalf("value %d in bucket %d (midpoint %d): error %.3f", v, i, mid, rel)
			}
		} else if mid != v {
			t.Fatalf("small value %d: got midpoint %d", v, mid)
		}
	}
	if got := bucketOf(math.MaxUint64); got != histBuckets-1 {
		t.Errorf("huge value: got bucket %d, want %d", got, histBuckets-1)
	}
	if n := testing.AllocsPerRun(100, func() {
		var h histogram
		h.record(time.Millisecond)
	}); n != 0 {
		t.Errorf("record allocates: %v allocs", n)
	}
}

func TestParseProcStat(t *testing.T) {
	line := []byte("4242 (a (weird) name) S 1 777 777 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 200")
	st, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st.pgrp != 777 {
		t.Errorf("pgrp: got %d, want 777", st.pgrp)
	}
	if want := 3 * time.Second; st.cpu != want {
		t.Errorf("cpu: got %v, want %v", st.cpu, want)
	}
	if _, err := parseProcStat([]byte("garbage")); err == nil {
		t.Error("garbage: got no error")
	}
}

func TestProcReadersOnSelf(t *testing.T) {
	// Burn some CPU so utime is visibly non-zero.
	deadline := time.Now().Add(150 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	_ = x
	st, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.pgrp != syscall.Getpgrp() {
		t.Errorf("pgrp: got %d, want %d", st.pgrp, syscall.Getpgrp())
	}
	if st.cpu <= 0 {
		t.Errorf("cpu: got %v, want > 0", st.cpu)
	}
	if self := selfCPU(); self < st.cpu/2 {
		t.Errorf("getrusage %v is far below /proc's %v", self, st.cpu)
	}
	rss, err := readRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1024 || rss > 4<<20 {
		t.Errorf("VmRSS: got %d KiB, want a plausible size", rss)
	}
	found := false
	for _, pid := range groupPids(syscall.Getpgrp()) {
		found = found || pid == os.Getpid()
	}
	if !found {
		t.Errorf("groupPids(%d) does not list this process", syscall.Getpgrp())
	}
	if _, err := parseVmRSS([]byte("Name:\tx\nState:\tZ\n")); err == nil {
		t.Error("status without VmRSS: got no error")
	}
	if lim, err := raiseNoFile(); err != nil || lim == 0 {
		t.Errorf("raiseNoFile: got %d, %v", lim, err)
	}
}

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name, in string
		status   int
		body     string
		close    bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 5\r\n\r\nhello", 200, "hello", false},
		{"lowercase", "HTTP/1.1 404 Not Found\r\ncontent-length: 18\r\nconnection: close\r\n\r\nno such connection", 404, "no such connection", true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n", 200, "hello", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &httpConn{br: bufio.NewReader(strings.NewReader(tt.in + tt.in))}
			for range 2 { // twice: the reader must end exactly at the response's end
				st, err := h.readResponse(true)
				if err != nil {
					t.Fatal(err)
				}
				if st != tt.status || string(h.body) != tt.body || h.close != tt.close {
					t.Errorf("got %d %q close=%v, want %d %q close=%v", st, h.body, h.close, tt.status, tt.body, tt.close)
				}
			}
		})
	}
	h := &httpConn{br: bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\n\r\n"))}
	if _, err := h.readResponse(false); err == nil {
		t.Error("no length: got no error")
	}
}

func TestMarkerFields(t *testing.T) {
	tests := []struct {
		name, msg string
		want      [3]uint64
		ok        bool
	}{
		{"raw", "PUSH:3:17:123456;xxxx", [3]uint64{3, 17, 123456}, true},
		{"wrapped", `{"type":"message","text":"BCAST:42;xxxx"}`, [3]uint64{42}, true},
		{"absent", `{"type":"join"}`, [3]uint64{}, false},
		{"unterminated", "PUSH:3:17", [3]uint64{3, 17}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			marker := pushMarker
			if strings.Contains(tt.msg, bcastMarker) {
				marker = bcastMarker
			}
			got, ok := markerFields([]byte(tt.msg), marker)
			if ok != tt.ok || (ok && got != tt.want) {
				t.Errorf("got %v %v, want %v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestFirstInt(t *testing.T) {
	for in, want := range map[string]int{"1000": 1000, "1000\n": 1000, `{"members":42}`: 42, "none": -1, "": -1} {
		if got := firstInt([]byte(in)); got != want {
			t.Errorf("firstInt(%q): got %d, want %d", in, got, want)
		}
	}
}

func TestFrameEncoding(t *testing.T) {
	for _, n := range []int{0, 64, 125, 126, 65535, 65536} {
		f := appendFrame(nil, opBinary, bytes.Repeat([]byte{'a'}, n))
		if f[0] != 0x82 || f[1]&0x80 == 0 {
			t.Errorf("%d bytes: header %x", n, f[:2])
		}
		hdr := map[bool]int{true: 2, false: 0}[n < 126] + map[bool]int{true: 4, false: 0}[n >= 126 && n < 65536] + map[bool]int{true: 10, false: 0}[n >= 65536]
		if got, want := len(f), hdr+4+n; got != want {
			t.Errorf("%d bytes: frame length got %d, want %d", n, got, want)
		}
	}
}

func TestFormatting(t *testing.T) {
	tests := []struct{ got, want string }{
		{fmtCount(0), "0"},
		{fmtCount(999.6), "1,000"},
		{fmtCount(1234567), "1,234,567"},
		{fmtLatency(0), "-"},
		{fmtLatency(412), "412us"},
		{fmtLatency(1234), "1.23ms"},
		{fmtLatency(45600), "45.6ms"},
		{fmtLatency(2.5e6), "2.50s"},
		{siNumber(123456), "123k"},
		{siNumber(2500), "2.5k"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func sampleReport() *Report {
	ratio := 0.6234
	return &Report{Command: "server bench", Machine: thisMachine(), Workers: 2, Conns: 64, Duration: "5s",
		Results: []*Result{
			{Scenario: "http", Mode: "baseline", OpsPerSec: 98765.4, P50us: 412, P99us: 1900, ServerCPU: 4.1, OpsPerCPU: 120000, PeakRSSMiB: 12.3, LoadgenCPU: 3.2},
			{Scenario: "http", Mode: "process", OpsPerSec: 61234, P50us: 800, P99us: 3500, ServerCPU: 4.9, OpsPerCPU: 74808, Ratio: &ratio, PeakRSSMiB: 40, Errors: 3, LoadgenCPU: 2.9},
			{Scenario: "push", Mode: "baseline", NA: true},
			{Scenario: "push", Mode: "base", Error: "join chat: boom"},
			{Scenario: "idle", Mode: "base", OpsPerSec: 5000, Idle: &IdleStats{Conns: 10000, KiBPerConn: 9.5,
				Procs: []ProcRSS{{Pid: 1, Role: "worker 0", DeltaKiB: 51000, Conns: 5100, KiBPerConn: 10}, {Pid: 2, Role: "worker 1", DeltaKiB: 44000}}}},
		}}
}

func TestTable(t *testing.T) {
	rep := sampleReport()
	var b bytes.Buffer
	writeTable(&b, rep.Results)
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if !strings.HasPrefix(lines[0], "scenario") || !strings.HasSuffix(lines[0], "loadgen CPU s") {
		t.Errorf("header: got %q", lines[0])
	}
	width := len(lines[0])
	for _, l := range lines {
		if l != "" && len(l) != width {
			t.Errorf("row %q: width %d, want %d (right-aligned columns)", l, len(l), width)
		}
	}
	out := b.String()
	for _, want := range []string{"98,765", "0.62x", "412us", "1.90ms", "n/a", "error", "74,808"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "\n\n") != 2 {
		t.Errorf("want a blank line between the 3 scenarios:\n%s", out)
	}
	notes := strings.Join(rep.notes(), "\n")
	for _, want := range []string{"push [base]: error: join chat: boom", "9.5 KiB each", "worker 0 +49.8 MiB for 5100 conns (10.0 KiB each), worker 1 +43.0 MiB"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}
	var md bytes.Buffer
	dir := t.TempDir()
	rep.writeMarkdown(&md, filepath.Join(dir, "r.md"), filepath.Join(dir, "c.svg"))
	for _, want := range []string{"| scenario | mode |", "|:--|:--|--:|", "](c.svg)", "machine: "} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
}

func TestChart(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"c.svg", "c.png"} {
		p := filepath.Join(dir, name)
		if err := writeChart(p, sampleReport()); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() < 1000 {
			t.Errorf("%s: %v, %v", name, fi, err)
		}
	}
	if err := writeChart(filepath.Join(dir, "c.jpg"), sampleReport()); err == nil {
		t.Error("jpg: got no error")
	}
}

func TestOptionsDefaults(t *testing.T) {
	o := Options{Scenarios: []string{"idle", "http"}}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(o.Scenarios, ","); got != "http,idle" {
		t.Errorf("scenario order: got %q, want %q", got, "http,idle")
	}
	if o.Workers != 2 || o.Conns != 64 || o.Duration != 5*time.Second || len(o.Modes) != 2 {
		t.Errorf("defaults: got %+v", o)
	}
	for _, bad := range []Options{{Modes: []string{"thread"}}, {Scenarios: []string{"ftp"}}, {Chart: "x.gif"}} {
		if err := bad.setDefaults(); err == nil {
			t.Errorf("%+v: got no error", bad)
		}
	}
	if err := Run(context.Background(), Options{}); err == nil || !strings.Contains(err.Error(), "Exe") {
		t.Errorf("no Exe: got %v", err)
	}
}
