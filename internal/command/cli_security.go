package command

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/forkd/forkd/master"
	"github.com/forkd/forkd/reactor"
)

// securityFlags are start's TLS, API, origin, user and per-address flags
// (docs/security.md). Each is also a key of the --config file.
func securityFlags() []cli.Flag {
	return []cli.Flag{
		altsrc.NewStringFlag(&cli.StringFlag{Name: "http-tls-cert", Usage: "PEM certificate chain for the http listener (https, wss by upgrade)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "http-tls-key", Usage: "PEM private key for the http listener"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ws-tls-cert", Usage: "PEM certificate chain for the ws listener (wss)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ws-tls-key", Usage: "PEM private key for the ws listener"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "listen-tls-cert", Usage: "NAME=FILE: certificate for any listener"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "listen-tls-key", Usage: "NAME=FILE: private key for any listener"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "tls-ticket-rotate", Value: master.DefaultTicketRotate,
			Usage: "make a new TLS session ticket key this often (the last 24 still resume)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "api-token", EnvVars: []string{master.EnvAPIToken},
			Usage: "bearer token the operator API (/push, /broadcast, ...) requires; prefer FORKD_API_TOKEN or --api-token-file (a command line is visible to every user)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "api-token-file", Usage: "file holding the API token"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "api-allow", Usage: "CIDR,...: addresses that may call the operator API besides 127.0.0.1 and ::1 (with a token: restricts it to those)"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "allowed-origins", Usage: "ORIGIN,...: browser origins that may open WebSockets besides the server's own (* for any; https://*.example.com)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "user", Usage: "run workers and task workers as this user (the master, as root, binds the ports)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "group", Usage: "with --user: run them with this group (default: the user's)"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-conn-per-ip", Usage: "connections one client address may hold before 503/1013 (0: off)"}),
	}
}

// securityOptions reads the flags above into o.
func (s *Program) securityOptions(c *cli.Context, o *master.Options) error {
	certs, keys := map[string]string{}, map[string]string{}
	for flag, m := range map[string]map[string]string{"listen-tls-cert": certs, "listen-tls-key": keys} {
		for _, kv := range c.StringSlice(flag) {
			name, file, ok := strings.Cut(kv, "=")
			if !ok || name == "" || file == "" {
				return fmt.Errorf("--%s %q: want NAME=FILE", flag, kv)
			}
			m[name] = file
		}
	}
	for _, n := range []string{"http", "ws"} {
		if v := c.String(n + "-tls-cert"); v != "" {
			certs[n] = v
		}
		if v := c.String(n + "-tls-key"); v != "" {
			keys[n] = v
		}
	}
	for i := range o.Listeners {
		ml, l := &o.Listeners[i], s.Listeners[i]
		ml.TLSCert, ml.TLSKey, ml.TLSConfig = l.TLSCert, l.TLSKey, l.TLS
		if v, ok := certs[l.Name]; ok {
			ml.TLSCert = v
			delete(certs, l.Name)
		}
		if v, ok := keys[l.Name]; ok {
			ml.TLSKey = v
			delete(keys, l.Name)
		}
		if (ml.TLSCert == "") != (ml.TLSKey == "") {
			return fmt.Errorf("listener %s: TLS needs both a certificate and a key file", l.Name)
		}
	}
	for _, m := range []map[string]string{certs, keys} {
		for name := range m {
			flag := "--listen-tls-cert/--listen-tls-key"
			if name == "http" || name == "ws" {
				flag = "--" + name + "-tls-cert/--" + name + "-tls-key"
			}
			return fmt.Errorf("%s: this program has no listener named %q (its listeners: %s)", flag, name, s.listenerNames())
		}
	}

	token := c.String("api-token")
	if f := c.String("api-token-file"); f != "" {
		if token != "" {
			return errors.New("--api-token-file: an API token is also set (--api-token or FORKD_API_TOKEN): use one")
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("--api-token-file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return fmt.Errorf("--api-token-file %s: the file is empty", f)
		}
	}
	// A Bearer header is trimmed and holds no control character: a token
	// with either could never match, and every call would get 401.
	if token != strings.TrimSpace(token) || strings.ContainsFunc(token, unicode.IsControl) {
		src := "--api-token (or FORKD_API_TOKEN)"
		if f := c.String("api-token-file"); f != "" {
			src = "--api-token-file " + f
		}
		return errors.New(src + ": the token starts or ends with white space or holds a control character; no Authorization header can carry it")
	}
	o.APIToken = token
	if o.TicketRotate = c.Duration("tls-ticket-rotate"); o.TicketRotate < 10*time.Millisecond {
		return fmt.Errorf("--tls-ticket-rotate %s: want at least 10ms", o.TicketRotate)
	}
	o.APIAllow = c.StringSlice("api-allow")
	if s.CheckAPI != nil {
		if err := s.CheckAPI(token, o.APIAllow); err != nil {
			return err
		}
	}
	o.AllowedOrigins = c.StringSlice("allowed-origins")
	if err := reactor.CheckOrigins(o.AllowedOrigins); err != nil {
		return fmt.Errorf("--allowed-origins: %w", err)
	}
	if o.MaxConnPerIP = c.Int("max-conn-per-ip"); o.MaxConnPerIP < 0 {
		return fmt.Errorf("--max-conn-per-ip must not be negative, got %d", o.MaxConnPerIP)
	}
	cr, err := credential(c.String("user"), c.String("group"))
	if err != nil {
		return err
	}
	o.Credential = cr
	return nil
}

// credential resolves --user/--group to what workers run as (nil: as
// the master). Refused unless the master runs as root.
func credential(name, group string) (*syscall.Credential, error) {
	if name == "" {
		if group != "" {
			return nil, errors.New("--group needs --user")
		}
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("--user %s: no such user", name)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("--user %s: uid %q", name, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("--user %s: gid %q", name, u.Gid)
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("--group %s: no such group", group)
		}
		if gid, err = strconv.ParseUint(g.Gid, 10, 32); err != nil {
			return nil, fmt.Errorf("--group %s: gid %q", group, g.Gid)
		}
	}
	if euid := os.Geteuid(); euid != 0 {
		return nil, fmt.Errorf("--user %s: the master must be started as root to run workers as another user (running as uid %d)", name, euid)
	}
	cr := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	// Supplementary groups: the user's, as a login would give them (and
	// none of root's). With --group, that group takes the place of the
	// user's primary group there too (as getgrouplist(user, group) and
	// systemd's User= with Group= do): otherwise the workers would keep
	// the group --group was given to replace.
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("--user %s: groups: %w", name, err)
	}
	cr.Groups = []uint32{cr.Gid} // never empty: an empty list would keep root's (setgroups is skipped)
	for _, id := range ids {
		g, err := strconv.ParseUint(id, 10, 32)
		if err != nil || uint32(g) == cr.Gid || (group != "" && id == u.Gid) {
			continue
		}
		cr.Groups = append(cr.Groups, uint32(g))
	}
	return cr, nil
}

// tlsConfigs are the program's own tls.Configs per listener, for workers.
func (s *Program) tlsConfigs() []*tls.Config {
	out := make([]*tls.Config, len(s.Listeners))
	for i, l := range s.Listeners {
		out[i] = l.TLS
	}
	return out
}

// redactArgs hides the API token in the command line workers are started
// with (a command line is readable by every user); workers take their
// configuration from the master, not from it.
func redactArgs(args []string) []string {
	out := append([]string(nil), args...)
	for i := 0; i < len(out); i++ {
		a := strings.TrimLeft(out[i], "-")
		if a == out[i] { // not a flag
			continue
		}
		switch {
		case a == "api-token" && i+1 < len(out):
			out[i+1] = "REDACTED"
			i++
		case strings.HasPrefix(a, "api-token="):
			out[i] = "--api-token=REDACTED"
		case a == "cluster-token" && i+1 < len(out):
			out[i+1] = "REDACTED"
			i++
		case strings.HasPrefix(a, "cluster-token="):
			out[i] = "--cluster-token=REDACTED"
		}
	}
	return out
}
