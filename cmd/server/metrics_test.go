package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/forkd/forkd/master"
)

// scrape fetches /metrics in the Prometheus text format and parses it with
// prometheus/common's parser: output it cannot parse fails the test.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: got %d %q", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// scrapeAll is scrape until every one of workers (worker label values)
// reports its Go runtime figures: the master leaves out of a scrape a
// process that does not answer within 3 s (a stall of a loaded machine),
// and a sum taken then misses that process's counters.
func scrapeAll(t *testing.T, addr string, workers ...string) map[string]*dto.MetricFamily {
	t.Helper()
	var fams map[string]*dto.MetricFamily
	waitFor(t, 30*time.Second, "a scrape every worker answered", func() bool {
		fams = scrape(t, addr)
		got := workersLabelled(fams, "go_goroutines")
		for _, w := range workers {
			if !got[w] {
				return false
			}
		}
		return true
	})
	return fams
}

// value sums the samples of family name whose labels include want
// (counters, gauges, and a histogram's count).
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	sum := 0.0
next:
	for _, m := range f.Metric {
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// workersLabelled returns the worker label values of family name.
func workersLabelled(fams map[string]*dto.MetricFamily, name string) map[string]bool {
	out := map[string]bool{}
	if f := fams[name]; f != nil {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == "worker" {
					out[l.GetValue()] = true
				}
			}
		}
	}
	return out
}

// TestMetrics scrapes /metrics in both modes under load and checks that the
// counters move exactly as the load says: requests served, WebSocket
// messages, pushes by outcome, broadcasts, a killed worker's restart; that
// every process reports its Go runtime and process figures; and that the
// output parses (text) and is served as OpenMetrics when asked.
func TestMetrics(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--task-workers", "1", "--metrics", "127.0.0.1:0")
			st := s.status()
			if st.MetricsAddr == "" {
				t.Fatalf("status has no metrics_addr")
			}
			addr := st.MetricsAddr
			every := []string{"master", "0", "1", "2"} // the task worker is 2
			before := scrapeAll(t, addr, every...)

			// Load: 8 clients x 50 keep-alive requests, scraped meanwhile.
			const clients, each = 8, 50
			stop := make(chan struct{})
			scraped := make(chan int, 1)
			go func() {
				n := 0
				for {
					select {
					case <-stop:
						scraped <- n
						return
					default:
					}
					if resp, err := httpClient.Get("http://" + addr + "/metrics"); err == nil {
						p := expfmt.NewTextParser(model.UTF8Validation)
						if _, err := p.TextToMetricFamilies(resp.Body); err != nil {
							t.Errorf("/metrics under load does not parse: %v", err)
						}
						resp.Body.Close()
						n++
					}
				}
			}()
			var wg sync.WaitGroup
			var failed sync.Map
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cl := &http.Client{Timeout: 10 * time.Second}
					for i := 0; i < each; i++ {
						resp, err := cl.Get("http://" + s.httpAddr + "/hello")
						if err != nil {
							failed.Store(err.Error(), true)
							continue
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							failed.Store(resp.Status, true)
						}
					}
				}()
			}
			wg.Wait()
			close(stop)
			if n := <-scraped; n == 0 {
				t.Errorf("no scrape completed during the load")
			}
			failed.Range(func(k, _ any) bool { t.Errorf("load request failed: %v", k); return true })

			// WebSocket echo: 20 messages in, 20 out.
			ws := s.dial(s.wsAddr, "/echo")
			for i := 0; i < 20; i++ {
				if err := ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("m%02d", i))); err != nil {
					t.Fatal(err)
				}
				ws.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, _, err := ws.ReadMessage(); err != nil {
					t.Fatal(err)
				}
			}
			ws.Close()

			// Pushes: 5 delivered to an echo client, then 3 to it once it has
			// closed; 2 broadcasts (to a room with no member). Not the chat:
			// it pushes and broadcasts by itself on join and leave.
			ec := s.dial(s.wsAddr, "/echo?pushed")
			var id string
			waitFor(t, 10*time.Second, "the echo connection listed", func() bool {
				id = connID(t, s, "/echo?pushed")
				return id != ""
			})
			for i := 0; i < 5; i++ {
				if resp, body := s.post("/push?conn="+id, "hi"); resp.StatusCode != 200 {
					t.Fatalf("push: got %d %q, want 200", resp.StatusCode, body)
				}
				ec.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, _, err := ec.ReadMessage(); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 2; i++ {
				if resp, body := s.post("/broadcast?room=nobody", "all"); resp.StatusCode != 200 {
					t.Fatalf("broadcast: got %d %q, want 200", resp.StatusCode, body)
				}
			}
			ec.Close()
			waitFor(t, 10*time.Second, "the closed echo connection to be gone", func() bool {
				return connID(t, s, "/echo?pushed") == ""
			})
			const gone = 3
			for i := 0; i < gone; i++ {
				if resp, body := s.post("/push?conn="+id, "late"); resp.StatusCode != 404 {
					t.Fatalf("push to a closed connection: got %d %q, want 404", resp.StatusCode, body)
				}
			}

			after := scrapeAll(t, addr, every...)
			delta := func(name string, labels map[string]string) float64 {
				return value(after, name, labels) - value(before, name, labels)
			}
			// The scrapes go to the metrics listener, not the server's. HTTP
			// requests: the load, 5 pushes and 2 broadcasts (2xx), 3 pushes
			// to a closed connection (4xx).
			load := float64(clients * each)
			if got, want := delta("forkd_http_requests_total", map[string]string{"code": "2xx"}), load+5+2; got != want {
				t.Errorf("forkd_http_requests_total{code=2xx} moved by %v, want %v", got, want)
			}
			if got := delta("forkd_http_requests_total", map[string]string{"code": "4xx"}); got != gone {
				t.Errorf("forkd_http_requests_total{code=4xx} moved by %v, want %d", got, gone)
			}
			posts := float64(5 + 2 + gone)
			if got, want := delta("forkd_http_request_duration_seconds", nil), float64(clients*each)+posts; got != want {
				t.Errorf("forkd_http_request_duration_seconds count moved by %v, want %v", got, want)
			}
			if got := delta("forkd_websocket_messages_total", map[string]string{"direction": "in"}); got != 20 {
				t.Errorf("websocket messages in moved by %v, want 20", got)
			}
			if got := delta("forkd_websocket_message_duration_seconds", nil); got != 20 {
				t.Errorf("websocket messages handled moved by %v, want 20", got)
			}
			if got := delta("forkd_websocket_messages_total", map[string]string{"direction": "out"}); got < 20+5 {
				t.Errorf("websocket messages out moved by %v, want at least 25", got)
			}
			// Every send to a connection is a push: the 20 echoes and the 5.
			if got := delta("forkd_pushes_total", map[string]string{"outcome": "ok"}); got != 20+5 {
				t.Errorf("forkd_pushes_total{outcome=ok} moved by %v, want 25", got)
			}
			failedPushes := delta("forkd_pushes_total", map[string]string{"outcome": "no_connection"}) + delta("forkd_pushes_total", map[string]string{"outcome": "closed"})
			if failedPushes != gone {
				t.Errorf("pushes to a closed connection counted %v, want %d", failedPushes, gone)
			}
			if got := delta("forkd_broadcasts_total", nil); got != 2 {
				t.Errorf("forkd_broadcasts_total moved by %v, want 2", got)
			}
			if got := delta("forkd_connections_accepted_total", nil); got < clients {
				t.Errorf("forkd_connections_accepted_total moved by %v, want at least %d", got, clients)
			}
			for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "forkd_worker_up"} {
				got := workersLabelled(after, name)
				for _, w := range []string{"0", "1", "2"} {
					if !got[w] {
						t.Errorf("%s has no series for worker %s (has %v)", name, w, got)
					}
				}
				if name != "forkd_worker_up" && !got["master"] {
					t.Errorf("%s has no series for the master", name)
				}
			}
			if v := value(after, "forkd_server_info", map[string]string{"mode": mode}); v != 1 {
				t.Errorf("forkd_server_info{mode=%s} = %v, want 1", mode, v)
			}

			// A killed worker shows in restarts.
			pid := s.workerPids()[0]
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 20*time.Second, "worker 0 replaced", func() bool {
				for _, w := range s.status().Workers {
					if w.ID == 0 && w.Pid != pid && w.State == master.StateReady {
						return true
					}
				}
				return false
			})
			fams := scrapeAll(t, addr, every...)
			if got := value(fams, "forkd_worker_restarts_total", map[string]string{"worker": "0"}); got != 1 {
				t.Errorf("forkd_worker_restarts_total{worker=0} = %v, want 1", got)
			}
			if got := value(fams, "forkd_worker_restarts_total", map[string]string{"worker": "1"}); got != 0 {
				t.Errorf("forkd_worker_restarts_total{worker=1} = %v, want 0", got)
			}

			// OpenMetrics when asked.
			req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
			req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
				t.Errorf("OpenMetrics asked: got Content-Type %q", ct)
			}
			if !strings.HasSuffix(string(b), "# EOF\n") || !strings.Contains(string(b), "forkd_http_requests") {
				t.Errorf("OpenMetrics body does not look like OpenMetrics: ...%q", b[max(0, len(b)-200):])
			}
		})
	}
}

// connID returns the id of the open connection whose path is path ("" when
// there is none), from `server connections --json`.
func connID(t *testing.T, s *server, path string) string {
	t.Helper()
	out, err := s.run("connections", "--json")
	if err != nil {
		t.Fatalf("connections: %v\n%s", err, out)
	}
	var conns []master.ConnInfo
	if err := json.Unmarshal([]byte(out), &conns); err != nil {
		t.Fatalf("connections --json: %v: %s", err, out)
	}
	for _, c := range conns {
		if c.Path == path {
			return c.ID
		}
	}
	return ""
}
