package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsAcrossReload: /metrics scraped every few milliseconds through
// three reloads under keep-alive load, in both modes. Every scrape answers
// 200 and parses with prometheus/common's parser, with no series twice (a
// draining worker and its replacement share a slot's label); the master's
// counters never go back (reloads by result, restarts: a reload is not a
// restart, and PROCESS mode's requests, counted where the client is
// answered); forkd_reloads_total{result="ok"} ends 3 higher.
func TestMetricsAcrossReload(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--task-workers", "1", "--metrics", "127.0.0.1:0")
			addr := s.status().MetricsAddr
			load := startKeepAliveLoad(t, s.httpAddr, "/hello", 8)
			waitFor(t, 10*time.Second, "load to run", func() bool { return load.ok.Load() > 100 })
			watched := []struct {
				name   string
				labels map[string]string
			}{
				{"forkd_reloads_total", map[string]string{"result": "ok"}},
				{"forkd_reloads_total", map[string]string{"result": "failed"}},
				{"forkd_worker_restarts_total", nil},
			}
			if mode == "process" {
				watched = append(watched, struct {
					name   string
					labels map[string]string
				}{"forkd_http_requests_total", map[string]string{"worker": "master"}})
			}
			var mu sync.Mutex
			var errs []string
			last := make([]float64, len(watched))
			scrapes := 0
			check := func() {
				fams, err := scrapeErr(addr)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err.Error())
					return
				}
				scrapes++
				for i, w := range watched {
					v := value(fams, w.name, w.labels)
					if v < last[i] {
						errs = append(errs, fmt.Sprintf("%s%v went back from %v to %v", w.name, w.labels, last[i], v))
					}
					last[i] = v
				}
				if d := seriesTwice(fams); d != "" {
					errs = append(errs, "a series twice: "+d)
				}
			}
			check()
			start := last[0]
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
						check()
					}
				}
			}()
			for i := 0; i < 3; i++ {
				if out, err := s.run("reload"); err != nil {
					t.Fatalf("reload %d: %v\n%s", i, err, out)
				}
				time.Sleep(200 * time.Millisecond) // scrapes between the reloads too
			}
			close(stop)
			<-done
			check()
			load.check(t)
			mu.Lock()
			defer mu.Unlock()
			t.Logf("%d scrapes", scrapes)
			if len(errs) > 0 {
				t.Errorf("%d bad scrapes, first: %q", len(errs), errs[:min(len(errs), 5)])
			}
			if last[0] != start+3 {
				t.Errorf("forkd_reloads_total{result=ok}: %v before 3 reloads, %v after", start, last[0])
			}
			if last[2] != 0 {
				t.Errorf("forkd_worker_restarts_total = %v after reloads only, want 0", last[2])
			}
		})
	}
}

// scrapeErr is scrape returning its failure.
func scrapeErr(addr string) (map[string]*dto.MetricFamily, error) {
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("GET /metrics: %d %q", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("/metrics does not parse: %w", err)
	}
	return fams, nil
}

// seriesTwice returns a series (name and labels) that appears twice, or "".
func seriesTwice(fams map[string]*dto.MetricFamily) string {
	seen := map[string]bool{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			key := name + "{" + strings.Join(ls, ",") + "}"
			if seen[key] {
				return key
			}
			seen[key] = true
		}
	}
	return ""
}
