package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// chromiumPath is Debian's chromium; .ci/install-chromium.sh installs it.
const chromiumPath = "/usr/bin/chromium"

// TestBrowserChat drives the built-in chat page (GET /) in headless Chromium:
// two tabs join one room over the WebSocket on the HTTP port and talk to each
// other, in both server modes.
func TestBrowserChat(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not found (run .ci/install-chromium.sh to enable this test)", chromiumPath)
		}
		t.Fatalf("%s not found under CI: run .ci/install-chromium.sh first (%v)", chromiumPath, err)
	}

	bin := buildServer(t)
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			base := startServer(t, ctx, bin, mode)
			chatInBrowser(t, ctx, base, mode)
		})
	}
}

// buildServer builds this package once and returns the binary's path.
func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "server")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startServer starts `server start` in its own process group, waits until
// GET /hello answers 200, and registers a cleanup that runs `server stop` and
// then kills whatever is left of the group. It returns http://127.0.0.1:P1.
func startServer(t *testing.T, ctx context.Context, bin, mode string) string {
	t.Helper()
	dir := t.TempDir()
	runDir := filepath.Join(dir, "run")
	httpAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	wsAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))

	logPath := filepath.Join(dir, "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "start", "--mode", mode, "--workers", "2",
		"--http", httpAddr, "--ws", wsAddr, "--run-dir", runDir, "--log-format", "console")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()

	t.Cleanup(func() {
		defer logf.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer scancel()
		out, err := exec.CommandContext(sctx, bin, "stop", "--run-dir", runDir).CombinedOutput()
		if err != nil {
			report := t.Errorf
			if t.Failed() { // the start already went wrong; stop failing is no news
				report = t.Logf
			}
			report("server stop: %v\n%s", err, out)
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("server (pid %d) still running 10s after stop; killing its group", pgid)
		}
		// Sweep the whole group (workers included) whatever happened above.
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Logf("kill -%d: %v", pgid, err)
		}
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("server log (%s):\n%s", logPath, b)
		}
	})

	base := "http://" + httpAddr
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/hello", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		select {
		case <-exited:
			t.Fatalf("server exited before GET /hello answered (last error: %v)", err)
		case <-ctx.Done():
			t.Fatalf("GET /hello: %v", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s/hello did not answer 200 within 15s (last error: %v)", base, err)
		}
	}
}

// chatInBrowser opens two tabs on the chat page, joins alice and bob to the
// room "lobby", and checks that each sees the other's message.
func chatInBrowser(t *testing.T, ctx context.Context, base, mode string) {
	dir := t.TempDir() // made before the browser, so it is removed after it
	userDataDir := filepath.Join(dir, "chromium-profile")

	var browserPID int
	allocCtx, allocCancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(userDataDir),
		chromedp.WindowSize(1000, 700),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			// Own group so the cleanup can sweep Chromium's helpers; the
			// kernel kills the browser if the test binary dies.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		}),
	)
	t.Cleanup(func() {
		allocCancel() // kills the browser and waits for it
		if browserPID > 0 {
			syscall.Kill(-browserPID, syscall.SIGKILL)
		}
		killUsing("--user-data-dir=" + userDataDir)
	})

	tabA, cancelA := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelA)
	// The first Run starts the browser; tab B is made after it, so it is a
	// second tab in the same browser.
	if err := chromedp.Do(tabA, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("tab A: open %s/: %v", base, err)
	}
	if b := chromedp.FromContext(tabA).Browser; b != nil && b.Process() != nil {
		browserPID = b.Process().Pid
	}
	tabB, cancelB := chromedp.NewContext(tabA)
	t.Cleanup(cancelB)
	if err := chromedp.Do(tabB, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("tab B: open %s/: %v", base, err)
	}

	join := func(tab context.Context, name string) {
		t.Helper()
		err := chromedp.Do(tab,
			chromedp.WaitVisible(chromedp.ID("join")),
			chromedp.SetValue(chromedp.ID("name"), name),
			chromedp.SetValue(chromedp.ID("room"), "lobby"),
			chromedp.Click(chromedp.ID("join")),
		)
		if err != nil {
			t.Fatalf("%s: join: %v", name, err)
		}
		waitJS(t, tab, name+" connected",
			`document.getElementById("status").dataset.state === "connected"`)
		status, _ := chromedp.Run(tab, chromedp.TextContent(chromedp.ID("status")))
		t.Logf("%s: %s", name, status)
		if want := "connected as " + name + " in room lobby"; !strings.Contains(status, want) {
			t.Errorf("%s: #status = %q, want it to contain %q", name, status, want)
		}
	}
	join(tabA, "alice")
	join(tabB, "bob")
	waitJS(t, tabA, "alice sees bob in #members",
		`[...document.querySelectorAll("#members > *")].some(e => e.textContent.includes("bob"))`)

	// bob types and presses Enter; alice clicks the Send button.
	if err := chromedp.Do(tabB, chromedp.SendKeys(chromedp.ID("text"), "hello from bob"+kb.Enter)); err != nil {
		t.Fatalf("bob: send: %v", err)
	}
	waitJS(t, tabA, "alice sees bob's message", msgExpr("bob", "hello from bob"))

	err := chromedp.Do(tabA,
		chromedp.SetValue(chromedp.ID("text"), "hi bob, alice here"),
		chromedp.Click(chromedp.ID("send")),
	)
	if err != nil {
		t.Fatalf("alice: send: %v", err)
	}
	waitJS(t, tabB, "bob sees alice's message", msgExpr("alice", "hi bob, alice here"))

	png, err := chromedp.Run(tabA, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(dir, "chat.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of tab A: %s", shot)
	// t.TempDir is removed after the test; FORKD_SCREENSHOT_DIR keeps a copy.
	if keep := os.Getenv("FORKD_SCREENSHOT_DIR"); keep != "" {
		p := filepath.Join(keep, "chat-"+mode+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Errorf("keep screenshot: %v", err)
		} else {
			t.Logf("screenshot kept: %s", p)
		}
	}
}

// msgExpr is a JS predicate: #log has a .msg line "HH:MM:SS from: text".
func msgExpr(from, text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll("#log .msg")].some(e => /^\d\d:\d\d:\d\d /.test(e.textContent) && e.textContent.endsWith(%q))`,
		" "+from+": "+text)
}

// waitJS waits up to 10 s for the JS predicate to be true in the tab, and on
// timeout fails with the page's #status, #members and #log.
func waitJS(t *testing.T, tab context.Context, what, expr string) {
	t.Helper()
	_, err := chromedp.Run(tab, chromedp.Poll[bool](expr,
		chromedp.WithPollingTimeout(10*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		state, _ := chromedp.Run(tab, chromedp.Evaluate[string](
			`["status: " + document.getElementById("status").textContent,
			  "members: " + [...document.querySelectorAll("#members > *")].map(e => e.textContent).join(", "),
			  "log:", ...[...document.querySelectorAll("#log > *")].map(e => "  " + e.textContent)].join("\n")`))
		t.Fatalf("waiting until %s: %v\npage:\n%s", what, err, state)
	}
}

// killUsing SIGKILLs the processes whose command line has the argument arg
// (Chromium passes --user-data-dir to every helper), so that none outlives
// the test even if it left the browser's process group.
func killUsing(arg string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, a := range bytes.Split(cmdline, []byte{0}) {
			if string(a) == arg {
				syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	}
}
