package command

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/forkd/forkd/master"
	"github.com/forkd/forkd/worker"
)

// StartRecordName is the file in the run dir where a running master keeps
// how it was started, so that `restart` starts it again the same way.
const StartRecordName = "server.start.json"

// startRecord is what `restart` needs to start a server again as it runs:
// the working directory relative paths were given from, and the `start`
// arguments (command-line flags; the config file they name is read again).
type startRecord struct {
	Dir  string   `json:"dir"`
	Args []string `json:"args"` // "start" and its flags
	// Env names the secrets' environment variables (secretFlags) that were
	// set at start: their values are not recorded, so restart must find
	// them set again (or the flag given) rather than start without them.
	Env []string `json:"env,omitempty"`
	// Systemd: systemd started this server (Type=notify, socket
	// activation): restart refuses, it would take it out of systemd's hands.
	Systemd bool `json:"systemd,omitempty"`
}

// startedBySystemd is read before the master takes (and forgets) LISTEN_*.
var startedBySystemd = os.Getenv("NOTIFY_SOCKET") != "" || os.Getenv("LISTEN_FDS") != ""

type secretFlagSpec struct {
	flag, env string
	alts      []string
}

// secretFlags are the start flags whose values are never written to disk
// (redactArgs), their environment variables, and the flags that may give
// the same secret another way.
var secretFlags = []secretFlagSpec{
	{flag: "api-token", env: master.EnvAPIToken, alts: []string{"api-token-file"}},
	{flag: "cluster-token", env: EnvClusterToken},
}

// writeStartRecord records argv for restart, pinning each listener that
// was given port 0 to the port it got (a restart keeps its addresses).
func (s *Program) writeStartRecord(runDir string, argv []string, o *master.Options, addrs []string) error {
	var pins []string
	for i, l := range o.Listeners {
		if i >= len(addrs) {
			break
		}
		if _, port, err := net.SplitHostPort(l.Addr); err == nil && port != "0" {
			continue
		}
		if l.Name == "http" || l.Name == "ws" {
			pins = append(pins, "--"+l.Name, addrs[i])
		} else {
			pins = append(pins, "--listen", l.Name+"="+addrs[i])
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("forkd: start record: %w", err)
	}
	// Secrets are not written to disk: restart asks for them again.
	rec := startRecord{Dir: wd, Args: redactArgs(mergeArgs(startFlags(), argv, pins)), Systemd: startedBySystemd}
	for _, sf := range secretFlags {
		if os.Getenv(sf.env) != "" {
			rec.Env = append(rec.Env, sf.env)
		}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("forkd: start record: %w", err)
	}
	path := filepath.Join(runDir, StartRecordName)
	if err := worker.WriteFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("forkd: start record: %w", err)
	}
	return nil
}

func readStartRecord(runDir string) (startRecord, error) {
	var rec startRecord
	b, err := os.ReadFile(filepath.Join(runDir, StartRecordName))
	if err != nil {
		return rec, fmt.Errorf("the running server left no start record: %w", err)
	}
	if err := json.Unmarshal(b, &rec); err != nil || len(rec.Args) == 0 || rec.Args[0] != "start" {
		return rec, fmt.Errorf("bad start record %s", filepath.Join(runDir, StartRecordName))
	}
	return rec, nil
}

// restart stops the running server and starts it again with the settings
// it ran with (its recorded `start` arguments, in its working directory),
// the flags given to restart winning over them. With no server running it
// starts with the flags given.
func (s *Program) restart(c *cli.Context) error {
	dir := c.String("run-dir")
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("restart: run dir: %w", err)
	}
	own := s.restartArgs()
	argv := append([]string{"start"}, own...)
	pid, perr := master.ReadPid(dir)
	if errors.Is(perr, master.ErrPermission) {
		return perr
	}
	if perr == nil {
		rec, err := readStartRecord(dir)
		if errors.Is(err, os.ErrPermission) { // the master is another user's: say so, once
			return fmt.Errorf("%w (reading %s)", master.ErrPermission, filepath.Join(dir, StartRecordName))
		}
		if err == nil && rec.Systemd {
			return fmt.Errorf("restart: the running server (pid %d) was started by systemd: restarting it from here would take it out of systemd's hands; use systemctl restart (or reload, for new code, with no gap)", pid)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "restart: %v; starting with the flags given to restart\n", err)
		} else {
			argv = mergeArgs(startFlags(), rec.Args, append(own, "--run-dir", abs))
			if argv, err = dropRedacted(argv, rec.Env); err != nil {
				return err
			}
			if err := os.Chdir(rec.Dir); err != nil {
				return fmt.Errorf("restart: the server's working directory: %w", err)
			}
		}
		// Refuse what start would refuse before stopping the running
		// server: `restart --mode bogus` used to stop it and then fail.
		if err := s.checkStart(argv); err != nil {
			return fmt.Errorf("restart: %w (the running server is left as it is)", err)
		}
		if err := askStop(abs, c.Bool("graceful")); err != nil {
			return err
		}
		if err := waitGone(abs, pid, 2*time.Minute); err != nil {
			return err
		}
		fmt.Printf("server stopped (master pid %d)\n", pid)
	}
	s.startArgs = argv
	return s.cli().Run(append([]string{s.progArg()}, argv...))
}

// checkStart makes the checks `start argv` makes before it starts
// anything (its flags, the config file, master.New's), as `start -d` does.
func (s *Program) checkStart(argv []string) error {
	o, err := s.loadOptions(argv[1:])
	if err != nil {
		return err
	}
	_, err = master.New(o)
	return err
}

// dropRedacted removes a recorded secret (--api-token, --cluster-token:
// their values were not written to disk) when the environment supplies
// it; with neither the flag given to restart nor the environment, restart
// cannot keep the setting and says so rather than start a server without
// it (or with "REDACTED" for a secret). The same for a secret the running
// server took from the environment (env: the variables recorded at start).
func dropRedacted(argv, env []string) ([]string, error) {
	items := parseArgs(startFlags(), argv)
	var out []string
	for _, it := range items {
		if sf := secretFlag(it.name); sf != nil && strings.HasSuffix(it.tokens[len(it.tokens)-1], "REDACTED") {
			if os.Getenv(sf.env) == "" {
				return nil, fmt.Errorf("restart: the running server was given --%s on its command line, which is not recorded "+
					"(secrets are not written to disk); give it to restart again, or set %s", sf.flag, sf.env)
			}
			continue
		}
		out = append(out, it.tokens...)
	}
	for _, sf := range secretFlags {
		if !slices.Contains(env, sf.env) || os.Getenv(sf.env) != "" {
			continue
		}
		given := slices.ContainsFunc(items, func(it argItem) bool { return it.name == sf.flag || slices.Contains(sf.alts, it.name) })
		if !given {
			return nil, fmt.Errorf("restart: the running server took --%s from %s, which is not set here "+
				"(secrets are not written to disk); set it for restart, or give --%s", sf.flag, sf.env, sf.flag)
		}
	}
	return out, nil
}

func secretFlag(name string) *secretFlagSpec {
	for i := range secretFlags {
		if secretFlags[i].flag == name {
			return &secretFlags[i]
		}
	}
	return nil
}

func (s *Program) progArg() string {
	if len(s.args) > 0 {
		return s.args[0]
	}
	return os.Args[0]
}

// restartArgs are the flags given to `restart` (without --graceful).
func (s *Program) restartArgs() []string {
	args := s.args
	if len(args) == 0 {
		args = os.Args
	}
	i := slices.Index(args, "restart")
	if i < 0 {
		return nil
	}
	var out []string
	for _, a := range args[i+1:] {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "g" || name == "graceful") {
			continue
		}
		out = append(out, a)
	}
	return out
}

// argItem is one flag of a command line with its value tokens.
type argItem struct {
	name   string // canonical flag name ("" for a positional argument)
	key    string // what a later item must match to replace this one
	tokens []string
}

// mergeArgs returns base ("start" and its flags) with every flag of over
// replacing base's setting of the same flag (a --listen of the same
// listener), or added; a flag set twice keeps its last setting, so the
// merge does not grow when repeated.
func mergeArgs(flags []cli.Flag, base, over []string) []string {
	items := append(parseArgs(flags, base), parseArgs(flags, over)...)
	var out []string
	for i, it := range items {
		if it.name != "" && slices.ContainsFunc(items[i+1:], func(x argItem) bool { return x.key == it.key }) {
			continue // set again later: the later one wins
		}
		out = append(out, it.tokens...)
	}
	return out
}

// parseArgs splits a command line into flags with their values (knowing
// which of flags take none) and positional arguments.
func parseArgs(flags []cli.Flag, args []string) []argItem {
	canon := map[string]string{}
	isBool := map[string]bool{}
	for _, f := range flags {
		names := f.Names()
		for _, n := range names {
			canon[n] = names[0]
		}
		if tv, ok := f.(interface{ TakesValue() bool }); ok && !tv.TakesValue() {
			isBool[names[0]] = true
		}
	}
	var items []argItem
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			items = append(items, argItem{tokens: []string{a}})
			continue
		}
		raw, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		name := canon[raw]
		if name == "" {
			name = raw
		}
		it := argItem{name: name, key: name, tokens: []string{a}}
		if !hasVal && !isBool[name] && i+1 < len(args) {
			i++
			val = args[i]
			it.tokens = append(it.tokens, val)
		}
		switch name {
		case "listen":
			ln, _, _ := strings.Cut(val, "=")
			it.key = "listen " + ln
		case "http", "ws": // the same listener as --listen http=
			it.key = "listen " + name
		}
		items = append(items, it)
	}
	return items
}
