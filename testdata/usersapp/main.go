// Command usersapp is a test program for package forkd's users API: uids
// (BindUID, UnbindUID, SendToUID, UIDOnline, UIDConns), groups (Join,
// RoomMembers, UIDsInRoom, BroadcastJSON with exclude) and history
// (SetRoomHistory, JoinSince). GET /do?op=... runs one call in the worker
// that serves the request and answers what it returned, as JSON; a
// WebSocket on /u first receives {"conn":ID,"worker":W}. The root
// package's users_api_test.go builds and drives it.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd"
)

func main() {
	s := &forkd.Server{
		Name: "usersapp",
		Listeners: []*forkd.Listener{
			{Name: "http", Addr: "127.0.0.1:9521", Protocol: forkd.HTTP, Handler: serveHTTP},
			{Name: "ws", Addr: "127.0.0.1:9522", Protocol: forkd.WebSocket, OnOpen: func(c *forkd.Conn) {
				b, _ := json.Marshal(map[string]any{"conn": c.ID().String(), "worker": c.Worker().ID()})
				c.Send(forkd.TextMessage, b)
			}},
		},
	}
	if err := s.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "usersapp:", err)
		os.Exit(1)
	}
}

func kind(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, forkd.ErrNoConnection):
		return "noconn"
	case errors.Is(err, forkd.ErrInvalid):
		return "invalid"
	case errors.Is(err, forkd.ErrTooLarge):
		return "toolarge"
	}
	return err.Error()
}

func serveHTTP(w *forkd.Worker, ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) == "/hello" { // readiness
		ctx.SetBodyString("hello")
		return
	}
	q := ctx.QueryArgs()
	arg := func(name string) string { return string(q.Peek(name)) }
	id := func(name string) forkd.ConnID {
		v, _ := forkd.ParseConnID(arg(name))
		return v
	}
	num := func(name string) uint64 {
		v, _ := strconv.ParseUint(arg(name), 10, 64)
		return v
	}
	out := map[string]any{}
	var err error
	switch arg("op") {
	case "bind":
		err = w.BindUID(id("conn"), arg("uid"))
	case "unbind":
		err = w.UnbindUID(id("conn"))
	case "uidconns":
		var ids []forkd.ConnID
		ids, err = w.UIDConns(arg("uid"))
		var s []string
		for _, v := range ids {
			s = append(s, v.String())
		}
		out["conns"] = s
	case "online":
		out["online"], err = w.UIDOnline(arg("uid"))
	case "sendtouid":
		var r forkd.BroadcastResult
		r, err = w.SendToUID(arg("uid"), forkd.TextMessage, []byte(arg("body")))
		out["reached"] = r.Reached
	case "join":
		err = w.Join(id("conn"), arg("room"))
	case "members":
		var ms []forkd.Member
		ms, err = w.RoomMembers(arg("room"), id("after"), int(num("limit")))
		var s []string
		for _, m := range ms {
			s = append(s, m.Conn.String()+"="+m.UID)
		}
		out["members"] = s
	case "uidsinroom":
		out["uids"], err = w.UIDsInRoom(arg("room"))
	case "history":
		err = w.SetRoomHistory(arg("room"), int(num("max")), time.Duration(num("ttlms"))*time.Millisecond)
	case "bcastjson":
		var ex []forkd.ConnID
		if arg("exclude") != "" {
			ex = append(ex, id("exclude"))
		}
		var r forkd.BroadcastResult
		r, err = w.BroadcastJSON(arg("room"), []byte(arg("body")), ex...)
		out["reached"], out["seq"], out["epoch"] = r.Reached, r.Seq, r.Epoch
	case "joinsince":
		var r forkd.Recovery
		r, err = w.JoinSince(id("conn"), arg("room"), num("since"), uint32(num("epoch")))
		out["gap"], out["replayed"], out["seq"], out["epoch"] = r.Gap, r.Replayed, r.Seq, r.Epoch
	default:
		ctx.Error("unknown op", fasthttp.StatusNotFound)
		return
	}
	out["err"] = kind(err)
	out["worker"] = w.ID()
	b, _ := json.Marshal(out)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}
