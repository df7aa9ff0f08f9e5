package command

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/forkd/forkd/master"
)

// handOffToken keeps --api-token's value off every long-lived process's
// command line (/proc/PID/cmdline, ps: readable by every user). The master
// that keeps running is never the process the user started: the foreground
// one re-executes itself once for its title (sysmon.KeepAwake), and
// `start -d` starts a detached one. Both take argv as returned here (the
// flag and its value gone, in any of its forms) and the token from
// FORKD_API_TOKEN, set here to the value the flag gave (a flag wins over
// the variable, as it did), so the master's token is unchanged.
// /proc/PID/environ is readable by the process's owner only, and workers
// get neither (filterEnv; their command line is redactArgs').
//
// The value is not overwritten in place in this process's argv: os.Args
// strings share that memory, and cli's stored value, the options and the
// argv handed to exec would all change with it. This process does not live
// on (it is replaced by exec, or waits for the detached master to be
// ready and exits).
//
// Restart consequence: the master records that its token came from
// FORKD_API_TOKEN, so `restart` wants it in the environment, or the flag
// again, as before (never the literal REDACTED, never no token).
func handOffToken(c *cli.Context, argv []string) []string {
	var out []string
	found := false
	for _, it := range parseArgs(startFlags(), argv) {
		if it.name == "api-token" {
			found = true
			continue
		}
		out = append(out, it.tokens...)
	}
	if !found {
		return argv
	}
	if err := os.Setenv(master.EnvAPIToken, c.String("api-token")); err != nil {
		return argv // kept as it was: the token must reach the master
	}
	return out
}
