package reactor

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestWSDirectWriteBackpressure: echoes written straight from Send while
// the client does not read fill the socket; the rest of a short direct
// write and everything after it is queued and flushed later. The client
// then reads every echo, whole and in order.
func TestWSDirectWriteBackpressure(t *testing.T) {
	for round := range 2 {
		h := &echoHandler{closeRecorder{closed: make(chan *Conn, 1)}}
		r := New(Options{Log: zerolog.Nop(), AllowedOrigins: []string{"*"}, MaxSendBuffer: 64 << 20}, h)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- r.Serve(ln, &Listener{Name: "ws", Protocol: WebSocket}) }()
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := nc.Write([]byte(testUpgrade)); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReaderSize(nc, 64<<10)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if l == "\r\n" {
				break
			}
		}
		const n, size = 1500, 7000 + 1 // odd sizes: short writes fall mid-frame
		go func() {
			var frame []byte
			for i := range n {
				p := []byte(strings.Repeat(string(rune('a'+i%26)), size-round))
				binary.BigEndian.PutUint32(p, uint32(i))
				frame = append(frame[:0], 0x82, 0x80|126, byte(len(p)>>8), byte(len(p)), 0, 0, 0, 0)
				frame = append(frame, p...)
				if _, err := nc.Write(frame); err != nil {
					return
				}
			}
		}()
		time.Sleep(300 * time.Millisecond) // let the server's sends back up
		for i := range n {
			var hdr [4]byte
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				t.Fatalf("echo %d: %v", i, err)
			}
			if hdr[0] != 0x82 || hdr[1] != 126 {
				t.Fatalf("echo %d: header %x", i, hdr)
			}
			p := make([]byte, int(hdr[2])<<8|int(hdr[3]))
			if _, err := io.ReadFull(br, p); err != nil {
				t.Fatal(err)
			}
			if len(p) != size-round || binary.BigEndian.Uint32(p) != uint32(i) || p[len(p)-1] != byte('a'+i%26) {
				t.Fatalf("echo %d: %d bytes, seq %d", i, len(p), binary.BigEndian.Uint32(p))
			}
		}
		nc.Close()
		<-h.closed
		r.Close()
		<-served
	}
}
