package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The nginx reference row, against the real nginx (installed by make deps;
// these tests are skipped, saying so, only where it is absent).

func needNginx(t *testing.T) string {
	t.Helper()
	bin, err := findNginx("")
	if err != nil {
		t.Skipf("no nginx on this machine (make deps / .ci/install-deps.sh installs it): %v", err)
	}
	return bin
}

func TestNginxConfig(t *testing.T) {
	dir := "/tmp/forkd-bench-nginx-x"
	tests := []struct {
		name    string
		workers int
		runAs   string
	}{
		{"as root", 3, "root root"},
		{"as a user", 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := nginxConfig(dir, "127.0.0.1:4321", tt.workers, 64, tt.runAs)
			for _, want := range []string{"daemon off;", "master_process on;", "worker_processes " + strconv.Itoa(tt.workers) + ";",
				"listen 127.0.0.1:4321;", `return 200 "hello";`, "access_log off;", "pid " + dir + "/nginx.pid;"} {
				if !strings.Contains(conf, want) {
					t.Errorf("config lacks %q:\n%s", want, conf)
				}
			}
			if got := strings.Contains(conf, "user "); got != (tt.runAs != "") {
				t.Errorf("user directive present: got %v, want %v:\n%s", got, tt.runAs != "", conf)
			}
			// Every path nginx writes is inside its directory.
			for _, p := range regexp.MustCompile(`\s(/\S+?);`).FindAllStringSubmatch(conf, -1) {
				if !strings.HasPrefix(p[1], dir+"/") {
					t.Errorf("path %q outside %s", p[1], dir)
				}
			}
			for _, d := range []string{"error_log", "client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path"} {
				if !regexp.MustCompile(`\b` + d + ` ` + regexp.QuoteMeta(dir) + `/`).MatchString(conf) {
					t.Errorf("%s not set inside %s:\n%s", d, dir, conf)
				}
			}
		})
	}
}

// procUID returns the effective uid pid runs as.
func procUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == "Uid:" {
			uid, _ := strconv.Atoi(f[2])
			return uid
		}
	}
	t.Fatalf("no Uid line for %d", pid)
	return -1
}

func TestNginxReference(t *testing.T) {
	bin := needNginx(t)
	for _, workers := range []int{1, 2} {
		t.Run("workers="+strconv.Itoa(workers), func(t *testing.T) {
			o := Options{Exe: "unused", Workers: workers, Conns: 8}
			if err := o.setDefaults(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tg, err := startNginx(ctx, &o, bin)
			if err != nil {
				t.Fatal(err)
			}
			stopped := false
			defer func() {
				if !stopped {
					tg.stop()
				}
			}()
			resp, err := http.Get("http://" + tg.httpAddr + "/hello")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "hello" {
				t.Errorf("GET /hello: got %d %q, want 200 \"hello\"", resp.StatusCode, body)
			}
			// Ready means a worker answered; the master may fork the next
			// worker a moment later (a loaded machine): wait for them all.
			ps := tg.procs(ctx)
			for deadline := time.Now().Add(10 * time.Second); len(ps) < 1+workers && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
				ps = tg.procs(ctx)
			}
			var roles []string
			for _, p := range ps {
				roles = append(roles, p.role)
				if uid := procUID(t, p.pid); uid != os.Geteuid() {
					t.Errorf("%s (pid %d) runs as uid %d, want %d (this process's)", p.role, p.pid, uid, os.Geteuid())
				}
			}
			if want := 1 + workers; len(ps) != want || roles[0] != "nginx master" {
				t.Errorf("processes: got %v, want the master and %d workers", roles, workers)
			}
			logb, _ := os.ReadFile(tg.errPath)
			if !bytes.Contains(logb, []byte("using inherited sockets")) {
				t.Errorf("nginx did not use the socket bench bound (error log: %s)", logb)
			}
			if !strings.HasPrefix(tg.runDir, os.TempDir()) {
				t.Errorf("run dir %s outside %s", tg.runDir, os.TempDir())
			}
			stopped = true
			if err := tg.stop(); err != nil {
				t.Errorf("stop: %v", err)
			}
			for _, p := range ps {
				if runsExe(p.pid, bin) {
					t.Errorf("%s (pid %d) still runs after stop", p.role, p.pid)
				}
			}
			if _, err := os.Stat(tg.runDir); !os.IsNotExist(err) {
				t.Errorf("run dir %s left behind (%v)", tg.runDir, err)
			}
		})
	}
}

var nginxPidRE = regexp.MustCompile(`nginx (?:master|worker)=(\d+)`)

func TestRunWithNginxReference(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	bin := needNginx(t)
	useHelper(t)
	dir := t.TempDir()
	var out, progress bytes.Buffer
	pw := &lockedWriter{w: &progress}
	o := Options{Exe: os.Args[0], Modes: []string{"base"}, Workers: 2, Conns: 8, Duration: 300 * time.Millisecond,
		Scenarios: []string{"http", "echo"}, Reference: ReferenceNginx, Stdout: &out, Progress: pw,
		Out: filepath.Join(dir, "report.md"), Chart: filepath.Join(dir, "chart.svg")}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := Run(ctx, o); err != nil {
		t.Fatalf("Run: %v\n%s\n%s", err, out.String(), progress.String())
	}
	table := out.String()
	t.Logf("\n%s", table)
	if !regexp.MustCompile(`(?m)^http\s+nginx\s+[\d,]+ .* \d+\.\d\dx `).MatchString(table) {
		t.Errorf("no http row for nginx with its ratio to the baseline:\n%s", table)
	}
	if regexp.MustCompile(`(?m)^echo\s+nginx`).MatchString(table) {
		t.Errorf("an echo row for nginx, which serves only http:\n%s", table)
	}
	if !regexp.MustCompile(`vs nginx .*: http \[base\] \d+\.\d\dx; nginx: nginx \S+ \(` + regexp.QuoteMeta(bin)).MatchString(table) {
		t.Errorf("no vs-nginx note under the table:\n%s", table)
	}
	md, _ := os.ReadFile(o.Out)
	if !bytes.Contains(md, []byte("| http | nginx |")) || !bytes.Contains(md, []byte("vs nginx")) {
		t.Errorf("the markdown report lacks the nginx row or note:\n%s", md)
	}
	svg, _ := os.ReadFile(o.Chart)
	if !bytes.Contains(svg, []byte("vs nginx: base")) {
		t.Errorf("the chart does not show vs nginx")
	}
	checkNginxGone(t, bin, progress.String())

	// The same as JSON: the rows in order, the ratios where they belong.
	out.Reset()
	progress.Reset()
	o.JSON, o.Out, o.Chart = true, "", ""
	if err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, out.String())
	}
	var got []string
	for _, r := range rep.Results {
		got = append(got, r.Scenario+"/"+r.Mode)
		switch {
		case r.Mode == modeNginx && (r.Ratio == nil || r.RatioNginx != nil || r.Ops == 0):
			t.Errorf("nginx row: got ratio %v, vs nginx %v, %d ops; want a ratio to the baseline only", r.Ratio, r.RatioNginx, r.Ops)
		case r.Scenario == "http" && r.Mode == "base" && r.RatioNginx == nil:
			t.Errorf("http/base: no ratio_vs_nginx")
		case r.Scenario == "echo" && r.RatioNginx != nil:
			t.Errorf("echo/%s: a ratio to nginx, which did not run echo", r.Mode)
		}
	}
	if want := "http/baseline http/nginx http/base echo/baseline echo/base"; strings.Join(got, " ") != want {
		t.Errorf("rows: got %q, want %q", strings.Join(got, " "), want)
	}
	if !strings.HasPrefix(rep.Reference, "nginx ") {
		t.Errorf("reference: got %q, want nginx's version and path", rep.Reference)
	}
	checkNginxGone(t, bin, progress.String())
}

// checkNginxGone checks that every nginx process the progress output
// named has ended.
func checkNginxGone(t *testing.T, bin, progress string) {
	t.Helper()
	m := nginxPidRE.FindAllStringSubmatch(progress, -1)
	if len(m) < 2 {
		t.Fatalf("progress names %d nginx processes, want the master and its workers:\n%s", len(m), progress)
	}
	for _, x := range m {
		pid, _ := strconv.Atoi(x[1])
		if runsExe(pid, bin) {
			t.Errorf("nginx pid %d still runs after Run", pid)
		}
	}
	if kids := children(t); len(kids) > 0 {
		t.Errorf("processes left behind: %v", kids)
	}
}

func TestReferenceOptions(t *testing.T) {
	o := Options{Reference: "apache"}
	if err := o.setDefaults(); err == nil || !strings.Contains(err.Error(), `unknown reference "apache"`) {
		t.Errorf("got %v, want an unknown-reference error", err)
	}
	if testing.Short() {
		return
	}
	useHelper(t)
	missing := "/nonexistent/sbin/nginx"
	tests := []struct {
		name, reference, path, wantErr, wantProgress string
	}{
		{"required", ReferenceNginx, missing, "bench: nginx " + missing, ""}, // and nothing started: below
		{"auto", ReferenceAuto, missing, "", "[nginx] no reference row: bench: nginx " + missing},
		{"none", ReferenceNone, missing, "", ""},
		{"required, not nginx", ReferenceNginx, "/bin/true", "bench: server in mode nginx exited (exit status 0)", ""},
		{"auto, not nginx", ReferenceAuto, "/bin/true", "", "[nginx] no reference row: bench: server in mode nginx exited (exit status 0)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			var progress bytes.Buffer
			o := Options{Exe: os.Args[0], Modes: []string{"base"}, Workers: 1, Conns: 4, Duration: 200 * time.Millisecond,
				Scenarios: []string{"http"}, Reference: tt.reference, NginxPath: tt.path, Stdout: &out,
				Progress: &lockedWriter{w: &progress}}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			err := Run(ctx, o)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Errorf("got %v, want %q...", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if tt.name == "required" && progress.Len() > 0 {
				t.Errorf("a missing required nginx is refused before anything starts; progress:\n%s", progress.String())
			}
			if tt.wantProgress != "" && !strings.Contains(progress.String(), tt.wantProgress) {
				t.Errorf("progress lacks %q:\n%s", tt.wantProgress, progress.String())
			}
			if strings.Contains(out.String(), "nginx") {
				t.Errorf("an nginx row without nginx:\n%s", out.String())
			}
			if kids := children(t); len(kids) > 0 {
				t.Errorf("processes left behind: %v", kids)
			}
		})
	}
}
