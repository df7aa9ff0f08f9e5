package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// tableHeader names the columns of the comparison table.
var tableHeader = []string{"scenario", "mode", "ops/s", "p50", "p99", "server CPU s",
	"ops/server-CPU-s", "vs baseline", "peak RSS MiB", "errors", "loadgen CPU s"}

// write prints the table or JSON and writes the markdown report and chart.
func (rep *Report) write(o *Options) error {
	if o.JSON {
		enc := json.NewEncoder(o.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("bench: write JSON: %w", err)
		}
	} else {
		writeTable(o.Stdout, rep.Results)
		for _, n := range rep.notes() {
			fmt.Fprintln(o.Stdout, n)
		}
	}
	if o.Chart != "" {
		if err := writeChart(o.Chart, rep); err != nil {
			return err
		}
	}
	if o.Out != "" {
		f, err := os.Create(o.Out)
		if err != nil {
			return fmt.Errorf("bench: report: %w", err)
		}
		rep.writeMarkdown(f, o.Out, o.Chart)
		if err := f.Close(); err != nil {
			return fmt.Errorf("bench: report: %w", err)
		}
	}
	return nil
}

// cells formats one row of the table.
func (r *Result) cells() []string {
	c := []string{r.Scenario, r.Mode}
	switch {
	case r.NA:
		for range tableHeader[2:] {
			c = append(c, "n/a")
		}
		return c
	case r.Error != "":
		c = append(c, "error")
		for range tableHeader[3:] {
			c = append(c, "-")
		}
		return c
	}
	ratio := "-"
	if r.Ratio != nil {
		ratio = fmt.Sprintf("%.2fx", *r.Ratio)
	}
	return append(c,
		fmtCount(r.OpsPerSec),
		fmtLatency(r.P50us),
		fmtLatency(r.P99us),
		fmt.Sprintf("%.2f", r.ServerCPU),
		fmtCount(r.OpsPerCPU),
		ratio,
		fmt.Sprintf("%.1f", r.PeakRSSMiB),
		strconv.FormatInt(r.Errors, 10),
		fmt.Sprintf("%.2f", r.LoadgenCPU),
	)
}

// writeTable prints an aligned text table: names left, figures right.
func writeTable(w io.Writer, rs []*Result) {
	rows := [][]string{tableHeader}
	for _, r := range rs {
		rows = append(rows, r.cells())
	}
	width := make([]int, len(tableHeader))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	for k, row := range rows {
		if k > 1 && row[0] != rows[k-1][0] {
			b.WriteByte('\n') // a blank line between scenarios
		}
		for i, c := range row {
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			if i > 0 {
				b.WriteString("  ")
			}
			if i < 2 {
				b.WriteString(c)
				if i < len(row)-1 {
					b.WriteString(pad)
				}
			} else {
				b.WriteString(pad + c)
			}
		}
		b.WriteByte('\n')
	}
	io.WriteString(w, b.String())
}

// writeMarkdown writes the report: table, notes, chart, command, machine.
func (rep *Report) writeMarkdown(w io.Writer, outPath, chartPath string) {
	fmt.Fprintf(w, "# server bench\n\n")
	fmt.Fprintf(w, "- command: `%s`\n", rep.Command)
	fmt.Fprintf(w, "- machine: %s\n", rep.Machine)
	fmt.Fprintf(w, "- %d workers, %d client connections, %s per scenario and mode\n\n", rep.Workers, rep.Conns, rep.Duration)
	fmt.Fprintf(w, "| %s |\n", strings.Join(tableHeader, " | "))
	align := []string{":--", ":--"}
	for range tableHeader[2:] {
		align = append(align, "--:")
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(align, "|"))
	for _, r := range rep.Results {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r.cells(), " | "))
	}
	fmt.Fprintln(w)
	for _, n := range rep.notes() {
		fmt.Fprintf(w, "- %s\n", n)
	}
	if chartPath != "" {
		rel := chartPath
		if r, err := filepath.Rel(filepath.Dir(outPath), chartPath); err == nil && !strings.HasPrefix(r, "..") {
			rel = r
		}
		fmt.Fprintf(w, "\n![ops per server CPU-second](%s)\n", filepath.ToSlash(rel))
	}
}

// notes explains units and details the table has no column for.
func (rep *Report) notes() []string {
	out := []string{"ops: http = requests, echo = messages echoed, push = deliveries, uid-push = deliveries to each of a user's 3 connections, " +
		"broadcast = member deliveries (latency: until the last member), connect = connections " +
		"(dial, handshake, one echo, close), idle = connections opened; " +
		"vs baseline = ops/server-CPU-s against the plain fasthttp process"}
	if n := rep.nginxNote(); n != "" {
		out = append(out, n)
	}
	if rep.Loadgen != "" {
		out = append(out, "http load: "+rep.Loadgen+" (wrk's request count and latency; the other scenarios: bench's own load generator)")
	}
	for _, r := range rep.Results {
		tag := r.Scenario + " [" + r.Mode + "]: "
		if r.Skipped != "" {
			out = append(out, tag+r.Skipped)
		}
		if r.Note != "" {
			out = append(out, tag+r.Note)
		}
		switch {
		case r.Error != "":
			out = append(out, tag+"error: "+r.Error)
		case r.Idle != nil:
			var ps []string
			for _, p := range r.Idle.Procs {
				s := fmt.Sprintf("%s %+.1f MiB", p.Role, float64(p.DeltaKiB)/1024)
				if p.Conns > 0 {
					s += fmt.Sprintf(" for %d conns (%.1f KiB each)", p.Conns, p.KiBPerConn)
				}
				ps = append(ps, s)
			}
			s := fmt.Sprintf("%s%d idle connections: %.1f KiB each over all server processes; %s",
				tag, r.Idle.Conns, r.Idle.KiBPerConn, strings.Join(ps, ", "))
			if r.Idle.Error != "" {
				s += "; connections that failed: " + r.Idle.Error
			}
			if r.Idle.AddrRetries > 0 {
				s += fmt.Sprintf("; %d dials retried for want of a local port (counted as errors)", r.Idle.AddrRetries)
			}
			if r.Idle.StatusMs > 0 {
				s += fmt.Sprintf("; while open: status --json %.0f ms, connections --json %.0f ms", r.Idle.StatusMs, r.Idle.ConnectionsMs)
			}
			if r.Idle.ConnectionsErr != "" {
				s += "; " + r.Idle.ConnectionsErr
			}
			out = append(out, s)
		case r.Push != nil:
			out = append(out, fmt.Sprintf("%s%d targets, by worker %s", tag, r.Push.Targets, fmtPerWorker(r.Push.TargetsPerWorker)))
		case r.UIDPush != nil:
			u := r.UIDPush
			out = append(out, fmt.Sprintf("%s%d users x %d connections (by worker %s), %d users on more than one worker",
				tag, u.Users, u.ConnsPerUser, fmtPerWorker(u.ConnsPerWorker), u.UsersSpanning))
		case r.Broadcast != nil:
			b := r.Broadcast
			s := fmt.Sprintf("%s%d members (by worker %s), %d broadcasts (%.0f/s), %d incomplete",
				tag, b.Members, fmtPerWorker(b.MembersPerWorker), b.Broadcasts, float64(b.Broadcasts)/max(r.Seconds, 1e-9), b.Incomplete)
			if b.CountMismatch > 0 {
				s += fmt.Sprintf(", %d where the server counted other than %d members (then timed to its count)", b.CountMismatch, b.Members)
			}
			if b.LastError != "" {
				s += ", last error: " + b.LastError
			}
			out = append(out, s)
		}
	}
	return out
}

func fmtPerWorker(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x - y
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+":"+strconv.Itoa(m[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// fmtCount prints a rate with thousands separators.
func fmtCount(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	return string(b)
}

// fmtLatency prints microseconds as a short duration.
func fmtLatency(us float64) string {
	d := time.Duration(us * 1e3)
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dus", d/time.Microsecond)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", us/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.1fms", us/1e3)
	default:
		return fmt.Sprintf("%.2fs", us/1e6)
	}
}

// nginxNote says how each mode compares with the nginx reference row, in
// ops per server CPU-second ("" without one).
func (rep *Report) nginxNote() string {
	var parts []string
	for _, r := range rep.Results {
		if r.RatioNginx != nil {
			parts = append(parts, fmt.Sprintf("%s [%s] %.2fx", r.Scenario, r.Mode, *r.RatioNginx))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "vs nginx (ops/server-CPU-s against the nginx row, same run): " + strings.Join(parts, ", ") + "; nginx: " + rep.Reference
}
