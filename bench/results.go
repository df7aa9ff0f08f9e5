package bench

import (
	"fmt"
	"runtime"
	"time"
)

// Report is the whole result of a Run, as printed by --json.
type Report struct {
	Command   string    `json:"command"`
	Machine   Machine   `json:"machine"`
	Modes     []string  `json:"modes"`
	Workers   int       `json:"workers"`
	Conns     int       `json:"conns"`
	Duration  string    `json:"duration"`
	Scenarios []string  `json:"scenarios"`
	Reference string    `json:"reference,omitempty"` // the reference server of the nginx rows, when one ran
	Loadgen   string    `json:"loadgen,omitempty"`   // the http scenario's load generator when not bench's own (--loadgen wrk)
	Results   []*Result `json:"results"`
}

// Machine describes the host.
type Machine struct {
	CPUs   int     `json:"cpus"`
	Model  string  `json:"model"`
	Kernel string  `json:"kernel"`
	Go     string  `json:"go"`
	Load1  float64 `json:"load1_at_start"` // 1-minute load average when the run began
}

func (m Machine) String() string {
	return fmt.Sprintf("%d CPUs, %s, Linux %s, %s, load average %.2f at start", m.CPUs, m.Model, m.Kernel, m.Go, m.Load1)
}

func thisMachine() Machine {
	model, kernel := machineInfo()
	return Machine{CPUs: runtime.NumCPU(), Model: model, Kernel: kernel, Go: runtime.Version(), Load1: loadAverage()}
}

// Result is one scenario in one mode.
type Result struct {
	Scenario   string   `json:"scenario"`
	Mode       string   `json:"mode"`              // "baseline", "nginx" (the reference), "process", "base"
	Unit       string   `json:"unit"`              // what one op is: req, msg, delivery, conn
	Loadgen    string   `json:"loadgen,omitempty"` // "wrk" when wrk drove the row (--loadgen wrk); omitted: bench's own
	Ops        int64    `json:"ops"`
	Seconds    float64  `json:"seconds"`
	OpsPerSec  float64  `json:"ops_per_sec"`
	P50us      float64  `json:"p50_us"`
	P99us      float64  `json:"p99_us"`
	ServerCPU  float64  `json:"server_cpu_s"`
	OpsPerCPU  float64  `json:"ops_per_server_cpu_s"`
	Ratio      *float64 `json:"ratio_vs_baseline,omitempty"` // OpsPerCPU / baseline's
	RatioNginx *float64 `json:"ratio_vs_nginx,omitempty"`    // a mode's OpsPerCPU / the nginx reference row's
	PeakRSSMiB float64  `json:"peak_rss_mib"`
	Errors     int64    `json:"errors"`
	LoadgenCPU float64  `json:"loadgen_cpu_s"`

	NA    bool   `json:"na,omitempty"`    // the scenario does not apply (baseline push/broadcast)
	Error string `json:"error,omitempty"` // the scenario could not run

	// Skipped says why the scenario cannot run in this mode on this
	// machine (with NA); Note how it was run differently from the other
	// scenarios (more workers, several load generator processes).
	Skipped string `json:"skipped,omitempty"`
	Note    string `json:"note,omitempty"`

	Idle      *IdleStats      `json:"idle,omitempty"`
	Push      *PushStats      `json:"push,omitempty"`
	UIDPush   *UIDPushStats   `json:"uid_push,omitempty"`
	Broadcast *BroadcastStats `json:"broadcast,omitempty"`
}

// IdleStats is the idle scenario's memory figure.
type IdleStats struct {
	Conns      int       `json:"conns"`
	KiBPerConn float64   `json:"kib_per_conn"` // summed RSS growth of all server processes / conns
	Procs      []ProcRSS `json:"procs"`
	Error      string    `json:"error,omitempty"` // some connections failed: how many, and the first error
	// AddrRetries counts dials retried for want of a local port
	// (EADDRNOTAVAIL); each is also one of the scenario's errors.
	AddrRetries int64 `json:"addr_retries,omitempty"`
	// StatusMs and ConnectionsMs are how long `server status --json` and
	// `server connections --json` took to answer while the connections
	// were open (0: not measured, as for the baseline); ConnectionsErr is
	// why either failed.
	StatusMs       float64 `json:"status_ms,omitempty"`
	ConnectionsMs  float64 `json:"connections_ms,omitempty"`
	ConnectionsErr string  `json:"connections_error,omitempty"`
}

// ProcRSS is one server process's RSS around the idle scenario.
type ProcRSS struct {
	Pid       int    `json:"pid"`
	Role      string `json:"role"`
	BeforeKiB uint64 `json:"before_kib"`
	AfterKiB  uint64 `json:"after_kib"`
	DeltaKiB  int64  `json:"delta_kib"`
	// Conns is how many of the connections this process holds, as the
	// server's status reports it (0: not reported); KiBPerConn is then
	// DeltaKiB / Conns.
	Conns      int     `json:"conns,omitempty"`
	KiBPerConn float64 `json:"kib_per_conn,omitempty"`
}

// PushStats describes the push targets.
type PushStats struct {
	Targets          int            `json:"targets"`
	TargetsPerWorker map[string]int `json:"targets_per_worker"`
}

// BroadcastStats describes the broadcast scenario.
type BroadcastStats struct {
	Members          int            `json:"members"`
	MembersPerWorker map[string]int `json:"members_per_worker"`
	Broadcasts       int64          `json:"broadcasts"`     // completed: every member had it
	Incomplete       int64          `json:"incomplete"`     // some member did not have it within 5s
	CountMismatch    int64          `json:"count_mismatch"` // the server's member count was not Members
	LastError        string         `json:"last_error,omitempty"`
}

// fill sets the window figures and merges the counters.
func (r *Result) fill(w window, cs []*counter) {
	var h histogram
	for _, c := range cs {
		r.Ops += c.ops.Load()
		r.Errors += c.errs.Load()
		h.merge(&c.h)
	}
	r.Seconds = w.elapsed.Seconds()
	if r.Seconds > 0 {
		r.OpsPerSec = float64(r.Ops) / r.Seconds
	}
	r.P50us = float64(h.percentile(0.50)) / 1e3
	r.P99us = float64(h.percentile(0.99)) / 1e3
	r.ServerCPU = w.serverCPU.Seconds()
	if r.ServerCPU > 0 {
		r.OpsPerCPU = float64(r.Ops) / r.ServerCPU
	}
	r.LoadgenCPU = w.loadgenCPU.Seconds()
}

// count records one broadcast that did not fail: complete (ok) within
// lat, the server having counted count members, or incomplete.
func (bs *BroadcastStats) count(ctr *counter, ok bool, count int, lat time.Duration) {
	if !ok {
		ctr.errs.Add(1)
		bs.Incomplete++
		return
	}
	if count != bs.Members {
		bs.CountMismatch++
	}
	ctr.h.record(lat)
	bs.Broadcasts++
}
