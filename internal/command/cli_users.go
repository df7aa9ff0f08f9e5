package command

import (
	"fmt"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/forkd/forkd/master"
)

// usersFlags are `start`'s room history flags (docs/guide.md, "Users,
// sessions and recovery").
func usersFlags() []cli.Flag {
	return []cli.Flag{
		altsrc.NewIntFlag(&cli.IntFlag{Name: "room-history",
			Usage: "keep each room's last N broadcasts for clients that reconnect with since=SEQ (0: off)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "room-history-ttl",
			Usage: "keep room broadcasts at most this long for reconnecting clients (0: no age limit; alone, keeps all that young)"}),
	}
}

// usersOptions reads usersFlags into o.
func usersOptions(c *cli.Context, o *master.Options) error {
	if o.RoomHistory = c.Int("room-history"); o.RoomHistory < 0 {
		return fmt.Errorf("--room-history must not be negative, got %d", o.RoomHistory)
	}
	if o.RoomHistoryTTL = c.Duration("room-history-ttl"); o.RoomHistoryTTL < 0 {
		return fmt.Errorf("--room-history-ttl must not be negative, got %s", o.RoomHistoryTTL)
	}
	return nil
}
