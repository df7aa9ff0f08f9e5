package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd"
)

// The built-in app's users API (issue 19): push to a user, who is online,
// who is in a room, a connection's session. Every path here is an
// operator path (operatorPaths): token or loopback.

// pushUID answers POST /push?uid=U: 200 with the number of the user's
// connections reached, 404 when the user has none.
func pushUID(w *forkd.Worker, ctx *fasthttp.RequestCtx, uid string) {
	res, err := w.SendToUID(uid, forkd.TextMessage, ctx.PostBody())
	if errors.Is(err, forkd.ErrNoConnection) {
		ctx.Error("user offline: no connection bound to that uid", fasthttp.StatusNotFound)
		return
	}
	if err != nil {
		pushError(ctx, err)
		return
	}
	ctx.Response.Header.Set("X-Push-Reached", strconv.Itoa(res.Reached))
	ctx.Response.Header.Set("X-Push-Skipped", strconv.Itoa(res.Skipped))
	if bytes.Contains(ctx.Request.Header.Peek("Accept"), []byte("application/json")) {
		writeJSON(ctx, map[string]int{"reached": res.Reached, "skipped": res.Skipped})
		return
	}
	ctx.SetBodyString(strconv.Itoa(res.Reached))
}

// serveUsers answers /online, /room and /session.
func serveUsers(w *forkd.Worker, ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("X-Worker-Id", strconv.Itoa(w.ID()))
	q := ctx.QueryArgs()
	switch string(ctx.Path()) {
	case "/online":
		uid := string(q.Peek("uid"))
		if uid == "" {
			ctx.Error("missing uid", fasthttp.StatusBadRequest)
			return
		}
		// In a cluster, every node's: a node that does not answer in
		// time is named in "missing" (its connections are not counted).
		n, err := w.UIDCount(uid)
		missing, err := partialNodes(err)
		if err != nil {
			pushError(ctx, err)
			return
		}
		conns, err := w.UIDConns(uid)
		more, err := partialNodes(err)
		if err != nil {
			pushError(ctx, err)
			return
		}
		ids := make([]string, len(conns))
		for i, id := range conns {
			ids[i] = id.String()
		}
		writeJSON(ctx, struct {
			Online  bool     `json:"online"`
			Conns   int      `json:"conns"`
			IDs     []string `json:"ids"`
			Missing []int    `json:"missing,omitempty"`
		}{n > 0, n, ids, mergeNodes(missing, more)})
	case "/room":
		serveRoom(w, ctx)
	case "/session":
		id, err := forkd.ParseConnID(string(q.Peek("conn")))
		if err != nil {
			ctx.Error("bad conn id", fasthttp.StatusBadRequest)
			return
		}
		var s forkd.Session
		switch {
		case ctx.IsGet():
			s, err = w.GetSession(id)
		case ctx.IsPost():
			var in forkd.Session
			if json.Unmarshal(ctx.PostBody(), &in) != nil {
				ctx.Error("want a JSON object of strings", fasthttp.StatusBadRequest)
				return
			}
			if string(q.Peek("replace")) == "1" {
				if err = w.SetSession(id, in); err == nil {
					s = in
				}
			} else {
				s, err = w.UpdateSession(id, in)
			}
		default:
			ctx.Error("use GET or POST", fasthttp.StatusMethodNotAllowed)
			return
		}
		if err != nil {
			pushError(ctx, err)
			return
		}
		writeJSON(ctx, s)
	}
}

// serveRoom answers GET /room?room=R[&after=CONN&limit=N]: the member
// count and a page of members with their uids; "next" is the after of
// the next page, absent on the last.
func serveRoom(w *forkd.Worker, ctx *fasthttp.RequestCtx) {
	q := ctx.QueryArgs()
	room := string(q.Peek("room"))
	if room == "" {
		ctx.Error("missing room", fasthttp.StatusBadRequest)
		return
	}
	var after forkd.ConnID
	if a := q.Peek("after"); len(a) > 0 {
		id, err := forkd.ParseConnID(string(a))
		if err != nil {
			ctx.Error("bad after", fasthttp.StatusBadRequest)
			return
		}
		after = id
	}
	limit := 100
	if l := q.Peek("limit"); len(l) > 0 {
		n, err := strconv.Atoi(string(l))
		if err != nil || n < 1 || n > 1000 {
			ctx.Error("want limit=1..1000", fasthttp.StatusBadRequest)
			return
		}
		limit = n
	}
	count, err := w.RoomCount(room)
	if err != nil {
		pushError(ctx, err)
		return
	}
	ms, err := w.RoomMembers(room, after, limit)
	if errors.Is(err, forkd.ErrInvalid) {
		ctx.Error("bad room name", fasthttp.StatusBadRequest)
		return
	}
	missing, err := partialNodes(err)
	if err != nil {
		pushError(ctx, err)
		return
	}
	type member struct {
		Conn string `json:"conn"`
		UID  string `json:"uid,omitempty"`
	}
	out := struct {
		Room    string   `json:"room"`
		Count   int      `json:"count"`
		Members []member `json:"members"`
		UIDs    []string `json:"uids"`
		Next    string   `json:"next,omitempty"`
		Missing []int    `json:"missing,omitempty"` // cluster nodes that did not answer in time
	}{Room: room, Count: count, Members: []member{}, UIDs: []string{}, Missing: missing}
	seen := map[string]bool{}
	for _, m := range ms {
		out.Members = append(out.Members, member{Conn: m.Conn.String(), UID: m.UID})
		if m.UID != "" && !seen[m.UID] {
			seen[m.UID] = true
			out.UIDs = append(out.UIDs, m.UID)
		}
	}
	if len(ms) == limit {
		out.Next = ms[len(ms)-1].Conn.String()
	}
	writeJSON(ctx, out)
}

// partialNodes splits a *forkd.PartialError (an answer without the nodes
// it names) from other errors.
func partialNodes(err error) ([]int, error) {
	var pe *forkd.PartialError
	if errors.As(err, &pe) {
		return pe.Nodes, nil
	}
	return nil, err
}

func mergeNodes(a, b []int) []int {
	for _, n := range b {
		if !slices.Contains(a, n) {
			a = append(a, n)
		}
	}
	slices.Sort(a)
	return a
}

func writeJSON(ctx *fasthttp.RequestCtx, v any) {
	b, _ := json.Marshal(v)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// parseExclude reads /broadcast's exclude=ID,ID,... (the connections the
// broadcast skips, the sender typically).
func parseExclude(v []byte) ([]forkd.ConnID, error) {
	if len(v) == 0 {
		return nil, nil
	}
	var out []forkd.ConnID
	for _, s := range strings.Split(string(v), ",") {
		id, err := forkd.ParseConnID(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	if len(out) > 1000 {
		return nil, errors.New("over 1000 ids")
	}
	return out, nil
}
