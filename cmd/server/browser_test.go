package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
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

// chromiumPath is Debian's chromium; .ci/install-deps.sh installs it.
const chromiumPath = "/usr/bin/chromium"

// TestBrowserChat drives the built-in chat page (GET /) in headless Chromium:
// two tabs join one room over the WebSocket on the HTTP port and talk to each
// other, in both server modes.
func TestBrowserChat(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not found (run .ci/install-deps.sh to enable this test)", chromiumPath)
		}
		t.Fatalf("%s not found under CI: run .ci/install-deps.sh first (%v)", chromiumPath, err)
	}

	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			s := startServer(t, mode, 2)
			chatInBrowser(t, ctx, "http://"+s.httpAddr, mode)
		})
		// The same over https and wss (by upgrade on the HTTP port), with
		// a CA made by the test: Chromium trusts it through
		// --ignore-certificate-errors-spki-list, which names the CA's
		// public key (the server sends the CA in its chain), and the
		// page's WebSocket passes the default Origin check.
		t.Run(mode+"-https", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			ca := newTestCA(t)
			s, certFile, _ := startTLSServer(t, ca, mode, 2)
			// Only the chain file changes; the server reads it at reload.
			chain, _ := os.ReadFile(certFile)
			writeFile(t, certFile, append(chain, ca.PEM...), 0o644)
			if out, err := s.run("reload", "--tls-only"); err != nil {
				t.Fatalf("reload --tls-only: %v\n%s", err, out)
			}
			spki := sha256.Sum256(ca.Cert.RawSubjectPublicKeyInfo)
			chatInBrowser(t, ctx, "https://"+s.httpAddr, mode+"-https",
				chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
		})
	}
}

// openBrowser starts headless Chromium (ended by the test's cleanup,
// helpers included) and opens url in its first tab.
func openBrowser(t *testing.T, ctx context.Context, url string, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	dir := t.TempDir() // made before the browser, so it is removed after it
	userDataDir := filepath.Join(dir, "chromium-profile")

	var browserPID int
	allocCtx, allocCancel := chromedp.NewExecAllocator(ctx, append([]chromedp.ExecAllocatorOption{
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
	}, extra...)...,
	)
	t.Cleanup(func() {
		allocCancel() // kills the browser and waits for it
		if browserPID > 0 {
			syscall.Kill(-browserPID, syscall.SIGKILL)
		}
		killUsing("--user-data-dir=" + userDataDir)
	})

	tab, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	// The first Run starts the browser; later tabs made from this one are
	// tabs of the same browser.
	if err := chromedp.Do(tab, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	if b := chromedp.FromContext(tab).Browser; b != nil && b.Process() != nil {
		browserPID = b.Process().Pid
	}
	return tab
}

// chatInBrowser opens two tabs on the chat page, joins alice and bob to the
// room "lobby", and checks that each sees the other's message.
func chatInBrowser(t *testing.T, ctx context.Context, base, mode string, extra ...chromedp.ExecAllocatorOption) {
	dir := t.TempDir() // made before the browser, so it is removed after it
	tabA := openBrowser(t, ctx, base+"/", extra...)
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
	// bob joined after alice: the roster tells him she is there.
	waitJS(t, tabB, "bob sees alice in #members",
		`[...document.querySelectorAll("#members > *")].some(e => e.textContent.includes("alice"))`)

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

// TestBrowserChatReload (BASE mode, --room-history): a rolling reload in
// the middle of a conversation closes every WebSocket with 1001; the chat
// page reconnects with since=SEQ&epoch=E, gets what the room broadcast
// meanwhile, and shows every message once, in both tabs.
func TestBrowserChatReload(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not found (run .ci/install-deps.sh to enable this test)", chromiumPath)
		}
		t.Fatalf("%s not found under CI: run .ci/install-deps.sh first (%v)", chromiumPath, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s := startServer(t, "base", 2, "--room-history", "100")
	tabA := openBrowser(t, ctx, "http://"+s.httpAddr+"/")
	tabB, cancelB := chromedp.NewContext(tabA)
	t.Cleanup(cancelB)
	if err := chromedp.Do(tabB, chromedp.Navigate("http://"+s.httpAddr+"/")); err != nil {
		t.Fatalf("tab B: %v", err)
	}
	connected := `document.getElementById("status").dataset.state === "connected"`
	for _, tab := range []struct {
		ctx  context.Context
		name string
	}{{tabA, "alice"}, {tabB, "bob"}} {
		if err := chromedp.Do(tab.ctx,
			chromedp.WaitVisible(chromedp.ID("join")),
			chromedp.SetValue(chromedp.ID("name"), tab.name),
			chromedp.SetValue(chromedp.ID("room"), "lobby"),
			chromedp.Click(chromedp.ID("join")),
		); err != nil {
			t.Fatalf("%s: join: %v", tab.name, err)
		}
		waitJS(t, tab.ctx, tab.name+" connected", connected)
	}
	say := func(text string) {
		t.Helper()
		waitJS(t, tabB, "bob connected", connected)
		if err := chromedp.Do(tabB, chromedp.SendKeys(chromedp.ID("text"), text+kb.Enter)); err != nil {
			t.Fatalf("bob: send: %v", err)
		}
	}
	say("before the reload")
	waitJS(t, tabA, "alice sees bob's message", msgExpr("bob", "before the reload"))

	// The reload, with the room busy: numbered messages from the API
	// every 30 ms while the workers are replaced one by one.
	done := make(chan error, 1)
	go func() {
		out, err := s.run("reload")
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		done <- err
	}()
	const during = 30
	for i := 0; i < during; i++ {
		body := fmt.Sprintf(`{"type":"message","room":"lobby","from":"ops","text":"during-%d","ts":%d}`, i, time.Now().UnixMilli())
		if resp, b := s.post("/broadcast?room=lobby&stamp=1", body); resp.StatusCode != 200 {
			t.Fatalf("broadcast during the reload: %d %q", resp.StatusCode, b)
		}
		time.Sleep(30 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatalf("reload: %v", err)
	}
	say("after the reload")
	reconnects := `[...document.querySelectorAll("#log .sys")].filter(e => e.textContent.startsWith("* connected to room")).length`
	for _, tab := range []struct {
		ctx  context.Context
		name string
	}{{tabA, "alice"}, {tabB, "bob"}} {
		waitJS(t, tab.ctx, tab.name+" sees the message after the reload", msgExpr("bob", "after the reload"))
		n, err := chromedp.Run(tab.ctx, chromedp.Evaluate[int](reconnects))
		if err != nil {
			t.Fatal(err)
		}
		if n < 2 {
			t.Errorf("%s: connected %d times, want a reconnect after the reload's 1001", tab.name, n)
		}
		counts, err := chromedp.Run(tab.ctx, chromedp.Evaluate[map[string]int](`(() => { const c = {};
			for (const e of document.querySelectorAll("#log .msg")) { const t = e.textContent.replace(/^\d\d:\d\d:\d\d /, ""); c[t] = (c[t] || 0) + 1; }
			return c; })()`))
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"bob: before the reload", "bob: after the reload"}
		for i := 0; i < during; i++ {
			want = append(want, fmt.Sprintf("ops: during-%d", i))
		}
		for _, w := range want {
			if counts[w] != 1 {
				t.Errorf("%s: %q shown %d times, want once (all: %v)", tab.name, w, counts[w], counts)
			}
		}
		if len(counts) != len(want) {
			t.Errorf("%s: messages shown: got %v, want exactly %v once each", tab.name, counts, want)
		}
	}
}
