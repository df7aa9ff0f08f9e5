package forkd

import "github.com/forkd/forkd/internal/command"

// Run is the program's main: in the master (or a command such as `stop`)
// it runs the CLI on args (os.Args); in a worker process it runs the
// worker. It returns an error for the caller to print and exit 1 on; it
// never calls os.Exit.
//
// The CLI offers start, stop, reload, restart, status, connections and
// reopen-logs; `bench` joins them when the program imports package
// github.com/forkd/forkd/bench (the built-in application does).
func (s *Server) Run(args []string) error {
	p := &command.Program{Name: s.Name, Usage: s.Usage, NoReload: s.NoReload, App: &app{s: s},
		CheckAPI: func(token string, allow []string) error {
			_, err := NewAPIGuard(token, allow)
			return err
		}}
	for _, l := range s.Listeners {
		proto := command.HTTP
		if l.Protocol == WebSocket {
			proto = command.WebSocket
		}
		p.Listeners = append(p.Listeners, &command.Listener{
			Name: l.Name, Addr: l.Addr, Protocol: proto, NoUpgrade: l.NoUpgrade,
			Label: l.Label, TLS: l.TLS, TLSCert: l.TLSCert, TLSKey: l.TLSKey,
		})
	}
	p.Processes, p.ProcessesErr = s.processNames()
	return p.Run(args)
}
