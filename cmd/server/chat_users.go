package main

import (
	"github.com/forkd/forkd"
)

// chatEnter binds a chat connection's uid (from ?uid=: a demo that trusts
// its client; bind after real authentication, docs/guide.md), keeps its
// room and name in its session and puts it in its room: with ?since=SEQ
// (and &epoch=E) it first gets what the room broadcast after SEQ, or
// {"type":"gap"} when that is gone.
func chatEnter(c *forkd.Conn, st *chatState) error {
	if uid := c.Query("uid"); uid != "" {
		if err := c.BindUID(uid); err != nil {
			return err
		}
	}
	// Kept by the process holding the connection: a PROCESS-mode worker
	// that takes it over reads it in OnResume (resumeChatState).
	if _, err := c.UpdateSession(forkd.Session{"room": st.room, "name": st.name}); err != nil {
		return err
	}
	if since, epoch, ok := c.SinceSeq(); ok {
		rec, err := c.JoinSince(st.room, since, epoch)
		if err == nil {
			c.Worker().Log().Debug().Str("conn", c.ID().String()).Str("room", st.room).Uint64("since", since).
				Bool("gap", rec.Gap).Int("replayed", rec.Replayed).Msg("chat recovered")
		}
		return err
	}
	return c.Join(st.room)
}

// resumeChatState rebuilds a chat connection's state in the worker that
// took it over, from its session (set in chatEnter), or from its handshake.
func resumeChatState(c *forkd.Conn) *chatState {
	s, err := c.Session()
	if err != nil || s["room"] == "" {
		return newChatState(c)
	}
	st := &chatState{room: s["room"], name: s["name"]}
	c.SetContext(st)
	return st
}
