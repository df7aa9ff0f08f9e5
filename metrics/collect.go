package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// Label is the label every series of the master's view carries: the
// worker id, "master", or a user process's slot id.
const Label = "worker"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("forkd_"+name, help, labels, nil)
}

const (
	busQueueHelp   = "Bytes queued on the ipc bus, not yet written: worker to master (to_master) and master to worker (to_worker)."
	busDroppedHelp = "Frames refused because a bounded bus queue was full."
)

// Descriptions shared by every process, so that the families the master
// merges agree on help and type.
var (
	DescConnsAccepted = desc("connections_accepted_total", "Connections accepted by the process holding them (the master in PROCESS mode, each worker in BASE mode).")
	DescConnsOpen     = desc("connections_open", "Connections open (HTTP keep-alive and WebSocket) in the process holding them.")
	DescHTTP          = desc("http_requests_total", "HTTP requests answered, by status class, where the client is answered (PROCESS: the master).", "code")
	DescHTTPLatency   = desc("http_request_duration_seconds", "HTTP request latency from the request's first byte to the end of its handling, where the client is answered.")
	DescWSMessages    = desc("websocket_messages_total", "WebSocket data messages read from (in) and written to (out) clients.", "direction")
	DescWSBytes       = desc("websocket_bytes_total", "WebSocket payload bytes read from (in) and written to (out) clients.", "direction")
	DescMsgLatency    = desc("websocket_message_duration_seconds", "Time a worker's OnMessage took; its count is messages handled.")
	DescBufferFull    = desc("send_buffer_full_total", "Times a connection's send buffer filled (OnBufferFull).")
	DescPushes        = desc("pushes_total", "Sends to a connection (Push, Conn.Send) by this process, by outcome.", "outcome")
	DescBroadcasts    = desc("broadcasts_total", "Room broadcasts sent by this process.")
	DescPipe          = desc("pipe_messages_total", "Pipe messages sent and received by this process.", "direction")
	DescTasks         = desc("tasks_total", "Tasks run by a task worker, by result.", "result")
	DescRequests      = desc("worker_requests_total", "Requests and WebSocket messages handled by the worker (the --max-request count).")
	DescBusQueue      = desc("bus_queue_bytes", busQueueHelp, "direction")
	DescBusDropped    = desc("bus_dropped_total", busDroppedHelp, "direction")
	DescTimers        = desc("timers", "Timers running in the process.")
	DescTaskQueue     = desc("task_queue_depth", "Tasks handed to a task worker and not yet answered.", Label)
	DescTaskRefused   = desc("tasks_refused_total", "Tasks refused by the master: no task worker, or every task queue full.", "reason")
	DescRestarts      = desc("worker_restarts_total", "Times the master replaced a process that died (reloads are not counted).", Label)
	DescBackoff       = desc("worker_backoff_seconds", "Crash-loop back-off before the next start of a process that keeps dying young; 0 when healthy.", Label)
	DescUp            = desc("worker_up", "1 when the process serving the slot is ready.", "kind", Label)
	// The master's side of each slot's bus (same families as the worker's).
	DescBusQueueSlot   = desc("bus_queue_bytes", busQueueHelp, "direction", Label)
	DescBusDroppedSlot = desc("bus_dropped_total", busDroppedHelp, "direction", Label)
	DescReloads        = desc("reloads_total", "Rolling reloads by result.", "result")
	DescInfo           = desc("server_info", "The server's mode and sizes (value 1).", "mode", "workers", "task_workers", "processes")
	// Cluster (docs/cluster.md): the master's series, labelled with the
	// node's name, only when the server is in a cluster.
	DescClusterConnected = desc("cluster_connected", "1 while this node is connected to NATS.", "node")
	DescClusterNodes     = desc("cluster_nodes", "Nodes up as this node sees them (itself included).", "node")
	DescClusterCalls     = desc("cluster_calls_total", "Operations this node sent to other nodes, by outcome.", "node", "outcome")
	DescClusterBcasts    = desc("cluster_broadcasts_total", "Room broadcasts this node published to the other nodes.", "node")
	DescClusterDropped   = desc("cluster_dropped_total", "Cluster messages this node dropped (slow consumer) or refused (too many calls waiting).", "node")
)

// ProcCollector exports a Proc: the connection series when the process
// holds connections (Reactor: the master in PROCESS mode, a worker in BASE
// mode), the bus series when it runs user code (Bus: workers, task
// workers, user processes), so that no process reports series that are
// always zero for it. Extra, when set, adds what only its owner knows
// (queue depths read on scrape).
type ProcCollector struct {
	P       *Proc
	Reactor bool
	Bus     bool
	Extra   func(ch chan<- prometheus.Metric)
}

// Describe sends nothing: the collector is unchecked (its extra series
// vary by process kind).
func (c *ProcCollector) Describe(chan<- *prometheus.Desc) {}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, h *Histogram) {
	cum, n, sum := h.Snapshot()
	b := make(map[float64]uint64, len(cum))
	for i, ub := range LatencyBuckets {
		b[ub] = cum[i]
	}
	ch <- prometheus.MustNewConstHistogram(d, n, sum, b)
}

// Collect reads the counters.
func (c *ProcCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.P
	if c.Reactor {
		counter(ch, DescConnsAccepted, p.ConnsAccepted.Load())
		ch <- prometheus.MustNewConstMetric(DescConnsOpen, prometheus.GaugeValue, float64(p.ConnsOpen.Load()))
		for i, class := range []string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"} {
			counter(ch, DescHTTP, p.HTTP[i].Load(), class)
		}
		histogram(ch, DescHTTPLatency, &p.HTTPLatency)
		counter(ch, DescWSMessages, p.WSMessagesIn.Load(), "in")
		counter(ch, DescWSMessages, p.WSMessagesOut.Load(), "out")
		counter(ch, DescWSBytes, p.WSBytesIn.Load(), "in")
		counter(ch, DescWSBytes, p.WSBytesOut.Load(), "out")
		counter(ch, DescBufferFull, p.BufferFull.Load())
	}
	if c.Bus {
		histogram(ch, DescMsgLatency, &p.MessageLatency)
		for i, name := range OutcomeNames {
			counter(ch, DescPushes, p.Pushes[i].Load(), name)
		}
		counter(ch, DescBroadcasts, p.Broadcasts.Load())
		counter(ch, DescPipe, p.PipeSent.Load(), "sent")
		counter(ch, DescPipe, p.PipeRecv.Load(), "received")
	}
	if c.Extra != nil {
		c.Extra(ch)
	}
}

// NewRegistry returns a process's registry: its counters, and the Go
// runtime and process collectors.
func NewRegistry(c prometheus.Collector) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), c)
	return r
}

// Encode gathers g into the wire form a worker sends the master: metric
// families, protobuf, length-delimited.
func Encode(g prometheus.Gatherer) ([]byte, error) {
	mfs, err := g.Gather()
	if err != nil && len(mfs) == 0 {
		return nil, fmt.Errorf("metrics: gather: %w", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return nil, fmt.Errorf("metrics: encode: %w", err)
		}
	}
	return buf.Bytes(), nil
}

// Decode reads what Encode wrote.
func Decode(b []byte) ([]*dto.MetricFamily, error) {
	dec := expfmt.NewDecoder(bytes.NewReader(b), expfmt.NewFormat(expfmt.TypeProtoDelim))
	var out []*dto.MetricFamily
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, fmt.Errorf("metrics: decode: %w", err)
		}
		out = append(out, mf)
	}
}

// Source is one process's families and the worker label they get.
type Source struct {
	Worker   string
	Families []*dto.MetricFamily
}

// Merge folds several processes' families into one view: every metric
// without a worker label gets its source's; families of one name are
// joined (a family whose type disagrees with the first seen is dropped).
func Merge(srcs []Source) []*dto.MetricFamily {
	by := map[string]*dto.MetricFamily{}
	for _, s := range srcs {
		for _, f := range s.Families {
			for _, m := range f.Metric {
				if !hasLabel(m, Label) {
					m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(Label), Value: proto.String(s.Worker)})
				}
				sort.Slice(m.Label, func(i, j int) bool { return m.Label[i].GetName() < m.Label[j].GetName() })
			}
			g := by[f.GetName()]
			if g == nil {
				by[f.GetName()] = f
				continue
			}
			if g.GetType() == f.GetType() {
				g.Metric = append(g.Metric, f.Metric...)
			}
		}
	}
	out := make([]*dto.MetricFamily, 0, len(by))
	for _, f := range by {
		sort.SliceStable(f.Metric, func(i, j int) bool { return labelKey(f.Metric[i]) < labelKey(f.Metric[j]) })
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func hasLabel(m *dto.Metric, name string) bool {
	for _, l := range m.Label {
		if l.GetName() == name {
			return true
		}
	}
	return false
}

func labelKey(m *dto.Metric) string {
	var b strings.Builder
	for _, l := range m.Label {
		b.WriteString(l.GetName())
		b.WriteByte('=')
		b.WriteString(l.GetValue())
		b.WriteByte(',')
	}
	return b.String()
}
