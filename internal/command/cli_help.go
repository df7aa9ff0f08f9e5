package command

import (
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/forkd/forkd/master"
)

// progName is the program's name in help and error hints.
func (s *Program) progName() string {
	if s.Name != "" {
		return s.Name
	}
	return master.DefaultName() // not argv[0]: the master's is its title
}

func (s *Program) usage() string {
	if s.Usage != "" {
		return s.Usage
	}
	return "a forkd server (Swoole's BASE and PROCESS modes)"
}

// protocolName says what a listener speaks, as help and the ready lines
// show it.
func (l *Listener) protocolName() string {
	switch {
	case l.Protocol == WebSocket:
		return "WebSocket"
	case l.NoUpgrade:
		return "HTTP"
	}
	return "HTTP, WebSocket by upgrade"
}

// listenerNames lists the listeners' names for error messages.
func (s *Program) listenerNames() string {
	var names []string
	for _, l := range s.Listeners {
		names = append(names, l.Name)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// listenersHelp describes this program's listeners for `start --help`.
func (s *Program) listenersHelp() string {
	var b strings.Builder
	b.WriteString("Listeners of this program (name, default address, protocol):\n")
	for _, l := range s.Listeners {
		flag := "--listen " + l.Name + "=ADDR"
		if l.Name == "http" || l.Name == "ws" {
			flag = "--" + l.Name + " ADDR"
		}
		fmt.Fprintf(&b, "   %-10s %-22s %s (set with %s)\n", l.Name, l.Addr, l.protocolName(), flag)
	}
	return strings.TrimRight(b.String(), "\n")
}

// describeListenerFlags fits --http, --ws and --listen to this program's
// listeners: a flag for a listener the program does not have is hidden
// (and refused if given), and each shows the listener's own default.
func (s *Program) describeListenerFlags(flags []cli.Flag) {
	byName := map[string]*Listener{}
	var others []string
	for _, l := range s.Listeners {
		byName[l.Name] = l
		if l.Name != "http" && l.Name != "ws" {
			others = append(others, l.Name+" ("+l.Addr+")")
		}
	}
	for _, f := range flags {
		sf := stringFlagOf(f)
		if sf == nil {
			continue
		}
		switch sf.Name {
		case "http", "ws":
			l := byName[sf.Name]
			if l == nil {
				sf.Hidden = true
				continue
			}
			sf.Usage = "address of listener " + l.Name + " (" + l.protocolName() + ")"
			sf.DefaultText = l.Addr
		case "http-tls-cert", "http-tls-key", "ws-tls-cert", "ws-tls-key":
			name, _, _ := strings.Cut(sf.Name, "-")
			sf.Hidden = byName[name] == nil
		}
	}
	for _, f := range flags {
		if ssf := stringSliceFlagOf(f); ssf != nil && ssf.Name == "listen" {
			if len(others) == 0 {
				ssf.Hidden = true
			} else {
				ssf.Usage = "NAME=ADDR, repeatable, for listener " + strings.Join(others, ", ")
			}
		}
	}
}

// stringFlagOf returns the cli.StringFlag inside f (altsrc wraps them).
func stringFlagOf(f cli.Flag) *cli.StringFlag {
	switch v := f.(type) {
	case *cli.StringFlag:
		return v
	case *altsrc.StringFlag:
		return v.StringFlag
	}
	return nil
}

func stringSliceFlagOf(f cli.Flag) *cli.StringSliceFlag {
	switch v := f.(type) {
	case *cli.StringSliceFlag:
		return v
	case *altsrc.StringSliceFlag:
		return v.StringSliceFlag
	}
	return nil
}

// polishCLI gives every command one-line errors for bad usage, makes an
// unknown command an error with a hint, and keeps `help` working.
func (s *Program) polishCLI(app *cli.App) {
	name := app.Name
	usageErr := func(cmd string) cli.OnUsageErrorFunc {
		return func(c *cli.Context, err error, _ bool) error {
			return fmt.Errorf("%s: %s; run '%s %s --help' for its flags", cmd, usageMsg(err), name, cmd)
		}
	}
	for _, c := range app.Commands {
		c.OnUsageError = usageErr(c.Name)
		// No command takes an argument. The flag package stops at the
		// first one, so `start 127.0.0.1 --http ...` would ignore every
		// flag after it and start on the defaults: refuse it.
		if act := c.Action; act != nil && !c.Hidden {
			cmd := c.Name
			c.Action = func(ctx *cli.Context) error {
				if ctx.Args().Present() {
					return fmt.Errorf("%s: unexpected argument %q (it takes none, and flags after it are not read); run '%s %s --help' for its flags", cmd, ctx.Args().First(), name, cmd)
				}
				return act(ctx)
			}
		}
	}
	app.OnUsageError = func(c *cli.Context, err error, _ bool) error {
		return fmt.Errorf("%s; run '%s help' for the commands", usageMsg(err), name)
	}
	var unknown string
	app.CommandNotFound = func(c *cli.Context, cmd string) { unknown = cmd }
	app.Action = func(c *cli.Context) error {
		if c.Args().Present() {
			return unknownCommand(name, c.Args().First())
		}
		return cli.ShowAppHelp(c)
	}
	app.After = func(c *cli.Context) error {
		if unknown != "" {
			return unknownCommand(name, unknown)
		}
		return nil
	}
}

// usageMsg words the flag package's "flag provided but not defined: -x" as
// "unknown flag -x" (--name for a long one).
func usageMsg(err error) string {
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		f = strings.TrimPrefix(f, "-")
		if len(f) > 1 {
			f = "-" + f
		}
		msg = "unknown flag -" + f
	}
	// `invalid value "abc" for flag -workers: parse error`: the flag as
	// the user typed it.
	if m := badValueRe.FindStringSubmatch(msg); m != nil {
		f := "-" + m[2]
		if len(m[2]) > 1 {
			f = "-" + f
		}
		msg = fmt.Sprintf("%s %s: not a valid value (%s)", f, m[1], m[3])
	}
	return msg
}

var badValueRe = regexp.MustCompile(`^invalid (?:boolean )?value (".*") for (?:flag )?-([A-Za-z0-9-]+): (.*)$`)

func unknownCommand(prog, cmd string) error {
	return fmt.Errorf("unknown command %q; run '%s help' for the commands", cmd, prog)
}

// reachable turns a listening address into one a browser on this machine
// can open: an unspecified host (0.0.0.0, ::) becomes loopback. asked is
// the address the listener was given: Go listens on "0.0.0.0:9501" with
// one dual-stack socket that reports itself as [::]:9501, and a user who
// asked for 0.0.0.0 (or ":9501") is shown 127.0.0.1, not [::1].
func reachable(addr, asked string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	ip := net.ParseIP(host)
	askedHost, _, _ := net.SplitHostPort(asked)
	askedIP := net.ParseIP(askedHost)
	v4 := askedHost == "" || (askedIP != nil && askedIP.To4() != nil)
	switch {
	case host == "" || (ip != nil && ip.IsUnspecified() && (ip.To4() != nil || v4)):
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified():
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// readyLines says where to go, one line per listener:
// "chat page: http://127.0.0.1:9501/"; https:// and wss:// for a listener
// that terminates TLS (tls[i]). addrs are the addresses bound, asked those
// the listeners were given.
func (s *Program) readyLines(addrs, asked []string, tls []bool) []string {
	var out []string
	for i, l := range s.Listeners {
		if i >= len(addrs) {
			break
		}
		label := l.Label
		if label == "" {
			label = l.Name
		}
		scheme := "http"
		if l.Protocol == WebSocket {
			scheme = "ws"
		}
		if i < len(tls) && tls[i] {
			scheme += "s"
		}
		out = append(out, fmt.Sprintf("%s: %s://%s/", label, scheme, reachable(addrs[i], at(asked, i))))
	}
	return out
}

// at is a[i], or "" past its end.
func at(a []string, i int) string {
	if i < len(a) {
		return a[i]
	}
	return ""
}
