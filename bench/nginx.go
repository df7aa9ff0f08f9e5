package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// The nginx reference row: the http scenario also runs against nginx,
// answering `return 200 "hello"` with as many worker processes as the
// server under test has, so that the table shows how close this machine's
// BASE mode is to a C event loop's cost per request, measured the same way
// (its processes' CPU from /proc) in the same run.

const modeNginx = "nginx"

// Reference values (Options.Reference, --reference).
const (
	ReferenceNone  = "none"  // no reference row
	ReferenceAuto  = "auto"  // nginx when it is installed
	ReferenceNginx = "nginx" // nginx, and an error when it cannot run
)

// referenceScenarios are the scenarios a reference server serves.
var referenceScenarios = []string{ScenarioHTTP}

// nginxPaths are where findNginx looks after $PATH (Debian installs it in
// /usr/sbin, which a non-root user's PATH often lacks).
var nginxPaths = []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"}

// findNginx returns the nginx binary to run: path when set, else nginx on
// $PATH or in nginxPaths.
func findNginx(path string) (string, error) {
	if path != "" {
		if _, err := exec.LookPath(path); err != nil {
			return "", fmt.Errorf("bench: nginx %s: %w", path, err)
		}
		return path, nil
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	for _, p := range nginxPaths {
		if _, err := exec.LookPath(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("bench: nginx not found (on $PATH or in " + strings.Join(nginxPaths, ", ") + "); install it (Debian: apt-get install nginx, or make deps)")
}

var nginxVersionRE = regexp.MustCompile(`nginx/(\S+)`)

// nginxVersion returns what `nginx -v` says its version is ("" when it
// does not say).
func nginxVersion(ctx context.Context, bin string) string {
	out, _ := exec.CommandContext(ctx, bin, "-v").CombinedOutput()
	if m := nginxVersionRE.FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return ""
}

// nginxConfig is the whole configuration bench runs nginx with: every
// path inside dir (the prefix), no daemon, a master and workers worker
// processes, the listening socket inherited (see startNginx), `return 200
// "hello"` on every path, no access log, and keep-alive connections that
// are not closed after 1,000 requests (nginx's default), since neither
// the server under test nor the baseline closes them. When bench runs as
// root, the workers run as root too (nginx would switch them to nobody).
func nginxConfig(dir, addr string, workers, conns int, runAs string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by server bench; removed with this directory\n")
	fmt.Fprintf(&b, "daemon off;\nmaster_process on;\nworker_processes %d;\n", workers)
	if runAs != "" {
		fmt.Fprintf(&b, "user %s;\n", runAs)
	}
	fmt.Fprintf(&b, "pid %s;\n", filepath.Join(dir, "nginx.pid"))
	fmt.Fprintf(&b, "error_log %s notice;\n", filepath.Join(dir, "error.log"))
	fmt.Fprintf(&b, "events { worker_connections %d; }\n", max(1024, 4*conns))
	b.WriteString("http {\n")
	b.WriteString("    access_log off;\n")
	for _, t := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "    %s_temp_path %s;\n", t, filepath.Join(dir, "temp", t))
	}
	b.WriteString("    keepalive_requests 100000000;\n")
	b.WriteString("    server {\n")
	fmt.Fprintf(&b, "        listen %s;\n", addr)
	b.WriteString("        location / {\n            default_type text/plain;\n            return 200 \"hello\";\n        }\n")
	b.WriteString("    }\n}\n")
	return b.String()
}

// nginxUser is the user directive's argument that keeps nginx's workers
// running as this process's user: "NAME GROUP" when running as root (the
// only case where nginx changes users), else "".
func nginxUser() (string, error) {
	if os.Geteuid() != 0 {
		return "", nil
	}
	u, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		return "", fmt.Errorf("bench: nginx: look up user %d: %w", os.Geteuid(), err)
	}
	g, err := user.LookupGroupId(strconv.Itoa(os.Getegid()))
	if err != nil {
		return "", fmt.Errorf("bench: nginx: look up group %d: %w", os.Getegid(), err)
	}
	return u.Username + " " + g.Name, nil
}

// startNginx starts nginx (binary bin) on a free loopback port and waits
// until it answers. The port is bench's own listening socket, handed down
// as nginx hands its sockets to a new binary (the NGINX environment
// variable names the inherited descriptor), so no other program can take
// it between its choice and nginx's start. Everything nginx writes (pid
// file, logs, temporary files) is in a fresh temporary directory, removed
// by stop. On error nothing is left running.
func startNginx(ctx context.Context, o *Options, bin string) (*target, error) {
	runAs, err := nginxUser()
	if err != nil {
		return nil, err
	}
	var ln net.Listener
	if o.PortMin != 0 {
		for p := o.PortMin; p <= o.PortMax && ln == nil; p++ {
			ln, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		}
		if ln == nil {
			return nil, fmt.Errorf("bench: nginx: no free port in %d-%d: %w", o.PortMin, o.PortMax, err)
		}
	} else if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("bench: nginx: listen: %w", err)
	}
	defer ln.Close() // nginx holds its own copy once started
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		return nil, fmt.Errorf("bench: nginx: listener: %w", err)
	}
	defer lf.Close()
	dir, err := os.MkdirTemp("", "forkd-bench-nginx-")
	if err != nil {
		return nil, fmt.Errorf("bench: run dir: %w", err)
	}
	addr := ln.Addr().String()
	t := &target{mode: modeNginx, workers: o.Workers, httpAddr: addr, wsAddr: addr, httpPath: o.HTTPPath, wsPath: o.WSPath,
		exe: bin, runDir: dir, done: make(chan struct{}), errPath: filepath.Join(dir, "error.log")}
	conf := filepath.Join(dir, "nginx.conf")
	err = os.WriteFile(conf, []byte(nginxConfig(dir, addr, o.Workers, o.Conns, runAs)), 0o600)
	if err == nil {
		err = os.MkdirAll(filepath.Join(dir, "temp"), 0o700)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: nginx: %w", err)
	}
	out, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: nginx: %w", err)
	}
	// -e: the log nginx writes before it has read the configuration
	// (its default is under /var/log); -p: relative paths, none here.
	t.cmd = exec.Command(bin, "-p", dir+"/", "-c", conf, "-e", t.errPath)
	t.cmd.Stdout, t.cmd.Stderr = out, out
	t.cmd.ExtraFiles = []*os.File{lf} // descriptor 3
	t.cmd.Env = append(os.Environ(), "NGINX=3;")
	t.cmd.SysProcAttr = setpgid()
	err = t.cmd.Start()
	out.Close()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: start %s: %w", bin, err)
	}
	// Handing the descriptor to exec put its (shared) file description
	// into blocking mode; nginx's workers need it non-blocking, as the
	// sockets it inherits from itself are, or one woken for a connection
	// another took would block in accept.
	if err := syscall.SetNonblock(int(lf.Fd()), true); err != nil {
		_ = killGroup(t.cmd.Process.Pid, syscall.SIGKILL)
		_ = t.cmd.Wait()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: nginx: listener: %w", err)
	}
	if err := t.watch(ctx, o.readyTimeout); err != nil {
		return nil, err
	}
	return t, nil
}

// runsExe reports whether pid is alive and runs the binary exe (nginx
// rewrites its processes' command lines, so sameExe cannot tell).
func runsExe(pid int, exe string) bool {
	got, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return false
	}
	want, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return false
	}
	return got == want
}

// startReference starts the reference server Options.Reference asks for,
// or returns nil when there is none to run: none asked for, no http
// scenario, or (with ReferenceAuto) no nginx that starts, which is said
// on the progress output.
func (s *session) startReference(ctx context.Context, rep *Report) (*target, error) {
	o := s.o
	if o.Reference == ReferenceNone || !slices.Contains(o.Scenarios, ScenarioHTTP) {
		return nil, nil
	}
	bin, err := findNginx(o.NginxPath)
	if err == nil {
		var t *target
		if t, err = startNginx(ctx, o, bin); err == nil {
			v := nginxVersion(ctx, bin)
			rep.Reference = strings.TrimSpace(fmt.Sprintf("nginx %s (%s), %d workers, return 200 \"hello\"", v, bin, o.Workers))
			var ps []string
			for _, p := range t.procs(ctx) {
				ps = append(ps, p.role+"="+strconv.Itoa(p.pid))
			}
			s.logf("[nginx] started: http %s, %s", t.httpAddr, strings.Join(ps, " "))
			return t, nil
		}
	}
	if o.Reference == ReferenceAuto && ctx.Err() == nil {
		s.logf("[nginx] no reference row: %v", err)
		return nil, nil
	}
	return nil, err
}
