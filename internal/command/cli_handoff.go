package command

import (
	"os"

	"github.com/urfave/cli/v2"
)

// handOffToken keeps the secrets' values (--api-token, --cluster-token:
// secretFlags) off every long-lived process's command line
// (/proc/PID/cmdline, ps: readable by every user). The master that keeps
// running is never the process the user started: the foreground one
// re-executes itself once for its title (sysmon.KeepAwake), and `start -d`
// starts a detached one. Both take argv as returned here (each secret flag
// and its value gone, in any of its forms) and the secret from its
// variable (FORKD_API_TOKEN, FORKD_CLUSTER_TOKEN), set here to the value
// the flag gave (a flag wins over the variable, as it did), so the
// master's settings are unchanged. /proc/PID/environ is readable by the
// process's owner and root only, and workers get neither (filterEnv; their
// command line is redactArgs').
//
// The value is not overwritten in place in this process's argv: os.Args
// strings share that memory, and cli's stored value, the options and the
// argv handed to exec would all change with it. This process does not live
// on (it is replaced by exec, or waits for the detached master to be
// ready and exits).
//
// Restart consequence: the master records that its secret came from the
// variable, so `restart` wants it in the environment, or the flag again,
// as before (never the literal REDACTED, never no secret).
func handOffToken(c *cli.Context, argv []string) []string {
	moved := map[string]bool{}
	var out []string
	for _, it := range parseArgs(startFlags(), argv) {
		if sf := secretFlag(it.name); sf != nil {
			moved[sf.flag] = true
			continue
		}
		out = append(out, it.tokens...)
	}
	if len(moved) == 0 {
		return argv
	}
	for _, sf := range secretFlags {
		if !moved[sf.flag] {
			continue
		}
		if err := os.Setenv(sf.env, c.String(sf.flag)); err != nil {
			return argv // kept as it was: the secret must reach the master
		}
	}
	return out
}
