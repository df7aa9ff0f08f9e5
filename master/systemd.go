package master

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// systemdEnv are the variables systemd gives the service's main process;
// workers do not inherit them (see filterEnv).
var systemdEnv = map[string]bool{
	"NOTIFY_SOCKET": true, "LISTEN_PID": true, "LISTEN_FDS": true, "LISTEN_FDNAMES": true,
	"WATCHDOG_PID": true, "WATCHDOG_USEC": true,
}

// notify sends state to systemd's NOTIFY_SOCKET (Type=notify); without
// one it does nothing. A failure is logged once, not on every watchdog
// ping, until a message gets through again.
func (m *Master) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		if !m.notifyBad.Swap(true) {
			m.log.Warn().Err(err).Msg("sd_notify failed (logged once until it works again)")
		}
		return
	}
	if m.notifyBad.Swap(false) {
		m.log.Info().Msg("sd_notify works again")
	}
}

// statusLine is the STATUS= systemd shows under `systemctl status`.
func (m *Master) statusLine() string {
	o := &m.opts
	s := fmt.Sprintf("STATUS=serving: %s mode, %d workers", o.Mode, o.Workers)
	if o.TaskWorkers > 0 {
		s += fmt.Sprintf(", %d task workers", o.TaskWorkers)
	}
	if len(o.Processes) > 0 {
		s += fmt.Sprintf(", %d processes", len(o.Processes))
	}
	return s
}

// notifyReady says READY=1: every worker is ready and the listeners serve.
// Not once a stop has begun (a reload cut short by it must not undo the
// STOPPING=1 systemd has been told).
func (m *Master) notifyReady() {
	if m.isStopping() {
		return
	}
	m.notify("READY=1\n" + m.statusLine())
}

// notifyReloading opens a reload (systemd's Type=notify-reload protocol:
// RELOADING=1 with the CLOCK_MONOTONIC time, closed by READY=1).
func (m *Master) notifyReloading() {
	m.notify("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=reloading")
}

// watchdog pings systemd (WatchdogSec=) at half the interval it asks for,
// for as long as the master's state lock can be taken: a master wedged on
// it stops pinging and systemd restarts the service.
func (m *Master) watchdog() {
	every, err := daemon.SdWatchdogEnabled(false)
	if err != nil || every <= 0 {
		return
	}
	t := time.NewTicker(every / 2)
	defer t.Stop()
	m.log.Info().Dur("interval", every).Msg("systemd watchdog enabled")
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
			m.mu.Lock()
			m.mu.Unlock() //nolint:staticcheck // the lock taken is the health check
			m.notify("WATCHDOG=1")
		}
	}
}

// passedSockets returns the sockets systemd passed (LISTEN_FDS), by their
// LISTEN_FDNAMES name, and forgets the variables (workers are not the
// service's main process). The master takes them instead of binding.
func passedSockets() map[string][]*os.File {
	files := activation.Files(true)
	if len(files) == 0 {
		return nil
	}
	out := map[string][]*os.File{}
	for _, f := range files {
		out[f.Name()] = append(out[f.Name()], f)
	}
	return out
}

// checkPassed refuses passed sockets that name no listener: a unit whose
// FileDescriptorName= is misspelled must fail clearly, not serve on a
// port nobody asked for.
func (m *Master) checkPassed(passed map[string][]*os.File) error {
	known := map[string]bool{"metrics": true}
	var names []string
	for _, l := range m.opts.Listeners {
		known[l.Name] = true
		names = append(names, l.Name)
	}
	for name := range passed {
		if !known[name] {
			return fmt.Errorf("master: socket activation: a passed socket is named %q, which no listener is (listeners: %s, metrics); set FileDescriptorName= in the .socket unit", name, strings.Join(names, ", "))
		}
	}
	return nil
}

// passedListener turns a passed socket into a listener.
func passedListener(name string, f *os.File) (net.Listener, error) {
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("master: socket activation: socket %q: %w (want a listening TCP socket, ListenStream=)", name, err)
	}
	return ln, nil
}
