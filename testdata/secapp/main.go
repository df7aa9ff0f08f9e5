// Command secapp is a test program for the library's security API: an
// HTTP listener with a tls.Config of its own (Listener.TLS, no certificate
// files), an operator endpoint behind Worker.API, and WebSocket echo by
// upgrade. The certificate comes from the files named by SECAPP_CERT and
// SECAPP_KEY, loaded before Run (so in every process, as the package doc
// warns; the CLI commands other than start run without them).
package main

import (
	"crypto/tls"
	"fmt"
	"os"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd"
)

func main() {
	// `start` and its workers have the files; `status`, `stop`... do not
	// need them.
	var tc *tls.Config
	if os.Getenv("SECAPP_CERT") != "" {
		cert, err := tls.LoadX509KeyPair(os.Getenv("SECAPP_CERT"), os.Getenv("SECAPP_KEY"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "secapp:", err)
			os.Exit(1)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	s := &forkd.Server{Name: "secapp", Listeners: []*forkd.Listener{
		{Name: "http", Addr: "127.0.0.1:0", Protocol: forkd.HTTP,
			TLS: tc,
			Handler: func(w *forkd.Worker, ctx *fasthttp.RequestCtx) {
				switch string(ctx.Path()) {
				case "/hello":
					ctx.SetBodyString("hello")
				case "/scheme":
					ctx.SetBody(ctx.URI().Scheme())
				case "/kick":
					if !w.API().Check(ctx) {
						return
					}
					id, err := forkd.ParseConnID(string(ctx.QueryArgs().Peek("conn")))
					if err != nil {
						ctx.Error("bad conn id", fasthttp.StatusBadRequest)
						return
					}
					if err := w.Close(id, forkd.ClosePolicy, "kicked"); err != nil {
						ctx.Error("no such connection", fasthttp.StatusNotFound)
						return
					}
					ctx.SetBodyString("kicked")
				default:
					ctx.Error("Not Found", fasthttp.StatusNotFound)
				}
			},
			OnOpen: func(c *forkd.Conn) { c.SendText(c.ID().String()) },
			OnMessage: func(c *forkd.Conn, t forkd.MessageType, data []byte) {
				c.Send(t, data)
			},
		},
	}}
	if err := s.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "secapp:", err)
		os.Exit(1)
	}
}
