package command

import (
	"crypto/tls"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/forkd/forkd/worker"
)

// Protocol is what a listener speaks (the root package's Protocol, same
// values).
type Protocol int

// Protocols.
const (
	HTTP      Protocol = iota // HTTP/1.1, and WebSocket by upgrade unless NoUpgrade
	WebSocket                 // WebSocket only
)

// Listener is what the CLI needs to know of one of the program's
// listeners: its name and default address (flags, help, ready lines), its
// protocol, and its TLS settings (handed to the master and the workers).
type Listener struct {
	Name, Addr      string
	Protocol        Protocol
	NoUpgrade       bool
	Label           string
	TLS             *tls.Config
	TLSCert, TLSKey string
}

// Program is one forkd program as its CLI sees it: the root package's
// Server fills it in and calls Run. The CLI never sees the user's
// callbacks; App (the root package's adapter) runs them in the workers.
type Program struct {
	Name, Usage string // the CLI's help (defaults: the binary's base name, "a forkd server")
	Listeners   []*Listener
	NoReload    bool
	// Processes are the names of the program's user processes, in order;
	// ProcessesErr says why they are not valid (reported by `start`).
	Processes    []string
	ProcessesErr error
	// App runs the program's callbacks in a worker process.
	App worker.App
	// CheckAPI refuses at start an --api-token/--api-allow the workers'
	// API guard would refuse (the root package's NewAPIGuard).
	CheckAPI func(token string, allow []string) error

	args      []string // Run's arguments (the program name first)
	startArgs []string // what `start` runs with, without the program name: args[1:] or restart's merge
}

// A Hook adds commands to every program's CLI; Register installs one.
// The benchmark (package bench) registers `bench` this way, so a program
// links the load generator and its charting library only when it imports
// that package.
type Hook func(p *Program) []*cli.Command

var (
	hookMu   sync.Mutex
	hookList []Hook
)

// Register adds h to the commands of every program's CLI. Call it from an
// init function.
func Register(h Hook) {
	hookMu.Lock()
	defer hookMu.Unlock()
	hookList = append(hookList, h)
}

func hooks() []Hook {
	hookMu.Lock()
	defer hookMu.Unlock()
	return append([]Hook(nil), hookList...)
}

// ListenerNames lists the program's listeners as help and errors name
// them.
func (s *Program) ListenerNames() string { return s.listenerNames() }

func (s *Program) processNames() ([]string, error) { return s.Processes, s.ProcessesErr }
