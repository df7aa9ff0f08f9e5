package metrics

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

func TestHistogram(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{50 * time.Microsecond, 100 * time.Microsecond, 3 * time.Millisecond, 20 * time.Second} {
		h.Observe(d)
	}
	cum, n, sum := h.Snapshot()
	if n != 4 {
		t.Errorf("count: got %d, want 4", n)
	}
	// 50us and 100us (the bound is inclusive) in the first bucket; 3ms in
	// the 5ms bucket; 20s only in +Inf.
	want := map[float64]uint64{0.0001: 2, 0.0025: 2, 0.005: 3, 10: 3}
	for i, ub := range LatencyBuckets {
		if w, ok := want[ub]; ok && cum[i] != w {
			t.Errorf("bucket le=%v: got %d, want %d", ub, cum[i], w)
		}
	}
	if got, want := sum, 20.00315; got < want-1e-9 || got > want+1e-9 {
		t.Errorf("sum: got %v, want %v", got, want)
	}
}

// TestHotPathAllocs: counting a request, a push or a message allocates
// nothing.
func TestHotPathAllocs(t *testing.T) {
	var p Proc
	if n := testing.AllocsPerRun(1000, func() {
		p.HTTPDone(200, 300*time.Microsecond)
		p.Push(1)
		p.WSMessagesIn.Add(1)
		p.MessageLatency.Observe(time.Millisecond)
	}); n != 0 {
		t.Errorf("got %v allocations per event, want 0", n)
	}
}

func TestConcurrentCounts(t *testing.T) {
	var p Proc
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				p.HTTPDone(200+100*(i%4), time.Millisecond)
			}
		}()
	}
	wg.Wait()
	for class, want := range map[int]uint64{2: 2000, 3: 2000, 4: 2000, 5: 2000} {
		if got := p.HTTP[class].Load(); got != want {
			t.Errorf("class %dxx: got %d, want %d", class, got, want)
		}
	}
	if _, n, _ := p.HTTPLatency.Snapshot(); n != 8000 {
		t.Errorf("latency count: got %d, want 8000", n)
	}
}

// TestEncodeDecodeMerge: a worker's families survive the wire and the
// merge labels them, joining same-named families; the text form parses.
func TestEncodeDecodeMerge(t *testing.T) {
	var w0, w1 Proc
	w0.HTTPDone(200, time.Millisecond)
	w1.HTTPDone(503, time.Millisecond)
	w1.HTTPDone(200, time.Millisecond)
	var srcs []Source
	for i, p := range []*Proc{&w0, &w1} {
		b, err := Encode(NewRegistry(&ProcCollector{P: p, Reactor: true, Bus: true}))
		if err != nil {
			t.Fatal(err)
		}
		fams, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, Source{Worker: string(rune('0' + i)), Families: fams})
	}
	// The master's own series with an explicit worker label keep it.
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		ch <- prometheus.MustNewConstMetric(DescRestarts, prometheus.CounterValue, 3, "1")
	}))
	own, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	srcs = append(srcs, Source{Worker: "master", Families: own})
	merged := Merge(srcs)
	var text strings.Builder
	enc := expfmt.NewEncoder(&text, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range merged {
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	out := text.String()
	for _, want := range []string{
		`forkd_http_requests_total{code="2xx",worker="0"} 1`,
		`forkd_http_requests_total{code="2xx",worker="1"} 1`,
		`forkd_http_requests_total{code="5xx",worker="1"} 1`,
		`forkd_worker_restarts_total{worker="1"} 3`,
		`go_goroutines{worker="0"}`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("merged output lacks %q", want)
		}
	}
	if strings.Count(out, "# TYPE forkd_http_requests_total counter") != 1 {
		t.Errorf("got the family's TYPE line %d times, want once", strings.Count(out, "# TYPE forkd_http_requests_total counter"))
	}
	// A family whose type disagrees with the first seen is dropped, not
	// served inconsistent.
	bad := &dto.MetricFamily{Name: proto.String("forkd_http_requests_total"), Type: dto.MetricType_GAUGE.Enum(),
		Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(1)}}}}
	for _, f := range Merge([]Source{{Worker: "0", Families: []*dto.MetricFamily{proto.Clone(merged[indexOf(merged, "forkd_http_requests_total")]).(*dto.MetricFamily)}}, {Worker: "9", Families: []*dto.MetricFamily{bad}}}) {
		for _, m := range f.Metric {
			if m.Gauge != nil && f.GetType() == dto.MetricType_COUNTER {
				t.Errorf("a gauge was merged into counter family %s", f.GetName())
			}
		}
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	if _, err := p.TextToMetricFamilies(strings.NewReader(out)); err != nil {
		t.Errorf("merged text does not parse: %v", err)
	}
}

func indexOf(fams []*dto.MetricFamily, name string) int {
	for i, f := range fams {
		if f.GetName() == name {
			return i
		}
	}
	return -1
}

// BenchmarkHTTPDone is the metrics' cost per request.
func BenchmarkHTTPDone(b *testing.B) {
	var p Proc
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		p.HTTPDone(200, 300*time.Microsecond)
	}
}
