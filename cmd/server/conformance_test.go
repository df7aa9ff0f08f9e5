package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The conformance suite: RFC 6455's server-side requirements, section by
// section in the order of the Autobahn test suite (1 framing, 2 pings and
// pongs, 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8, 7 close,
// 9 large messages, 10 bursts), against /echo on the real binary, in both
// modes, on the WebSocket port and by upgrade on the HTTP port. Every case
// that ends a connection checks the exact close code and that the TCP
// connection ends within closeDeadline of the closing handshake.

// cfLimit is the --max-package-size the suite runs with.
const cfLimit = 1 << 20

type cfCase struct {
	name string
	run  func(c *cfClient)
}

func echoes(payload []byte, op byte) func(c *cfClient) {
	return func(c *cfClient) {
		c.send(cfFrame{fin: true, op: op, payload: payload}.bytes())
		c.expect(op, payload)
		c.closeHandshake(closeCode(1000, ""), 1000)
	}
}

// fails sends b and expects the server to fail the connection with code,
// processing nothing after the offending frame (a ping after it in the
// same write must get no pong).
func fails(code int, b ...[]byte) func(c *cfClient) {
	return func(c *cfClient) {
		c.send(append(bytes.Join(b, nil), ping("after").bytes()...))
		c.expectClose(code)
	}
}

// failsAfterEcho: the valid message before the bad frame is echoed first.
func failsAfterEcho(code int, bad []byte) func(c *cfClient) {
	return func(c *cfClient) {
		c.send(append(append(text("first").bytes(), bad...), ping("after").bytes()...))
		c.expect(opText, []byte("first"))
		c.expectClose(code)
	}
}

func cfCases() []cfCase {
	var cs []cfCase
	add := func(name string, run func(c *cfClient)) { cs = append(cs, cfCase{name, run}) }

	// 1. Framing: every length encoding, both data opcodes, and frames
	// that arrive a byte at a time.
	for _, n := range []int{0, 1, 125, 126, 127, 128, 65535, 65536, 200000} {
		p := bytes.Repeat([]byte("*"), n)
		add(fmt.Sprintf("1_text_%d", n), echoes(p, opText))
		add(fmt.Sprintf("1_binary_%d", n), echoes(bytes.Repeat([]byte{0xfe}, n), opBinary))
	}
	add("1_text_bytewise", func(c *cfClient) {
		c.sendChunks(text("Hello, world!").bytes(), 1, time.Millisecond)
		c.expect(opText, []byte("Hello, world!"))
		c.closeHandshake(closeCode(1000, ""), 1000)
	})
	add("1_binary_65536_chunked", func(c *cfClient) {
		p := bytes.Repeat([]byte{0x01}, 65536)
		c.sendChunks(binFrame(p).bytes(), 997, 0)
		c.expect(opBinary, p)
		c.closeHandshake(closeCode(1000, ""), 1000)
	})
	add("1_unmasked_frame", fails(1002, cfFrame{fin: true, op: opText, payload: []byte("x"), unmask: true}.bytes()))

	// 2. Pings and pongs.
	for _, n := range []int{0, 125} {
		p := bytes.Repeat([]byte{0xee}, n)
		add(fmt.Sprintf("2_ping_%d", n), func(c *cfClient) {
			c.send(cfFrame{fin: true, op: opPing, payload: p}.bytes())
			c.expect(opPong, p)
			c.closeHandshake(closeCode(1000, ""), 1000)
		})
	}
	add("2_ping_126", fails(1002, cfFrame{fin: true, op: opPing, payload: make([]byte, 126)}.bytes()))
	add("2_unsolicited_pong", func(c *cfClient) {
		c.send(frames(cfFrame{fin: true, op: opPong, payload: []byte("unasked")}, text("then")))
		c.expect(opText, []byte("then"))
		c.closeHandshake(closeCode(1000, ""), 1000)
	})
	add("2_ping_bytewise", func(c *cfClient) {
		c.sendChunks(ping("slow ping").bytes(), 1, time.Millisecond)
		c.expect(opPong, []byte("slow ping"))
		c.closeHandshake(closeCode(1000, ""), 1000)
	})
	add("2_ping_burst", func(c *cfClient) {
		var b []byte
		for i := 0; i < 10; i++ {
			b = append(b, ping(fmt.Sprint("p", i)).bytes()...)
		}
		c.send(b)
		for i := 0; i < 10; i++ {
			c.expect(opPong, []byte(fmt.Sprint("p", i)))
		}
		c.closeHandshake(closeCode(1000, ""), 1000)
	})

	// 3. Reserved bits: no extension is negotiated, so any RSV bit fails.
	for _, rsv := range []byte{0x40, 0x20, 0x10, 0x70} {
		for _, op := range []byte{opText, opBinary, opPing} {
			f := cfFrame{fin: true, rsv: rsv, op: op, payload: []byte("rsv")}
			add(fmt.Sprintf("3_rsv_%#x_op_%d", rsv, op), failsAfterEcho(1002, f.bytes()))
		}
	}

	// 4. Opcodes: the reserved ones fail, even after a valid message.
	for _, op := range []byte{3, 4, 5, 6, 7, 11, 12, 13, 14, 15} {
		f := cfFrame{fin: true, op: op, payload: []byte("op")}
		add(fmt.Sprintf("4_opcode_%d", op), failsAfterEcho(1002, f.bytes()))
	}

	// 5. Fragmentation.
	add("5_fragmented_ping", fails(1002, cfFrame{fin: false, op: opPing, payload: []byte("a")}.bytes(),
		cfFrame{fin: true, op: opCont, payload: []byte("b")}.bytes()))
	add("5_fragmented_pong", fails(1002, cfFrame{fin: false, op: opPong, payload: []byte("a")}.bytes(),
		cfFrame{fin: true, op: opCont, payload: []byte("b")}.bytes()))
	add("5_text_2_fragments", func(c *cfClient) {
		c.send(frames(cfFrame{op: opText, payload: []byte("frag")}, cfFrame{fin: true, op: opCont, payload: []byte("ment")}))
		c.expect(opText, []byte("fragment"))
		c.closeHandshake(closeCode(1000, ""), 1000)
	})
	add("5_binary_1_byte_fragments", func(c *cfClient) {
		var b []byte
		for i := 0; i < 100; i++ {
			op := byte(opCont)
			if i == 0 {
				op = opBinary
			}
			b = append(b, cfFrame{fin: i == 99, op: op, payload: []byte{byte(i)}}.bytes()...)
		}
		c.send(b)
		want := make([]byte, 100)
		for i := range want {
			want[i] = byte(i)
		}
		c.expect(opBinary, want)
		c.closeHandshake(closeCode(1000, ""), 1000)
	})
	add("5_ping_between_fragments", func(c *cfClient) {
		c.send(frames(cfFrame{op: opText, payload: []byte("frag")}, ping("mid"), cfFrame{fin: true, op: opCont, payload: []byte("ment")}))
		c.expect(opPong, []byte("mid"))
		c.expect(opText, []byte("fragment"))
		c.closeHandshake(closeCode(1000, ""), 1000)
	})
	add("5_fragments_chunked_with_pings", func(c *cfClient) {
		b := frames(cfFrame{op: opText, payload: []byte("one ")}, ping("1"), cfFrame{op: opCont, payload: []byte("two ")},
			ping("2"), cfFrame{fin: true, op: opCont, payload: []byte("three")})
		c.sendChunks(b, 1, 0)
		c.expect(opPong, []byte("1"))
		c.expect(opPong, []byte("2"))
		c.expect(opText, []byte("one two three"))
		c.closeHandshake(closeCode(1000, ""), 1000)
	})
	add("5_continuation_first", fails(1002, cfFrame{fin: true, op: opCont, payload: []byte("orphan")}.bytes()))
	add("5_continuation_unfinished_first", fails(1002, cfFrame{fin: false, op: opCont, payload: []byte("orphan")}.bytes()))
	add("5_new_message_inside_fragmented", fails(1002, cfFrame{op: opText, payload: []byte("a")}.bytes(), text("b").bytes()))
	add("5_continuation_after_complete", failsAfterEcho(1002, cfFrame{fin: true, op: opCont, payload: []byte("late")}.bytes()))

	// 6. UTF-8.
	for i, s := range []string{"", "Hello-µ@ßöäüàá-UTF-8!!", "κόσμε", "\u0080", "\u07ff", "\u0800", "\uffff",
		"\U00010000", "\U0010ffff", "\xef\xbf\xbe", strings.Repeat("€", 1000)} {
		add(fmt.Sprintf("6_valid_%d", i), echoes([]byte(s), opText))
	}
	for i, s := range []string{"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
		"\xff", "\xc0\xaf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xed\xa0\x80", "\xed\xbf\xbf", "\xf4\x90\x80\x80",
		"\xf8\x88\x80\x80\x80", "\x80", "\xc2", "ok\xe2\x82", "\xfe\xfe\xff\xff"} {
		add(fmt.Sprintf("6_invalid_%d", i), fails(1007, text(s).bytes()))
	}
	add("6_invalid_in_fragment_2_of_3_fails_fast", func(c *cfClient) {
		// U+10FFFF+1 encoded: F4 90 80 80. The first fragment is valid, the
		// second makes it invalid: the close must come before the third.
		c.send(cfFrame{op: opText, payload: []byte("\xce\xba\xe1\xbd\xb9\xcf\x83")}.bytes())
		time.Sleep(20 * time.Millisecond)
		c.send(cfFrame{op: opCont, payload: []byte("\xf4\x90\x80\x80")}.bytes())
		c.expectClose(1007)
	})
	add("6_invalid_prefix_fails_fast_across_fragments", func(c *cfClient) {
		// F4 then 90: already invalid, although the sequence is unfinished.
		c.send(cfFrame{op: opText, payload: []byte("ok\xf4")}.bytes())
		time.Sleep(20 * time.Millisecond)
		c.send(cfFrame{op: opCont, payload: []byte("\x90")}.bytes())
		c.expectClose(1007)
	})
	add("6_invalid_in_one_frame_fails_fast", func(c *cfClient) {
		// One frame sent in three pieces: the close must come after the
		// piece with the invalid bytes, before the rest of the frame.
		b := text("valid start \xf4\x90\x80\x80 and an end that never comes").bytes()
		head := 2 + 4 + len("valid start ")
		c.send(b[:head])
		time.Sleep(20 * time.Millisecond)
		c.send(b[head : head+4])
		c.expectClose(1007)
	})
	add("6_split_multibyte_across_fragments", func(c *cfClient) {
		c.send(frames(cfFrame{op: opText, payload: []byte("\xf0\x90")}, cfFrame{op: opCont, payload: []byte("\x80")},
			cfFrame{fin: true, op: opCont, payload: []byte("\x80")}))
		c.expect(opText, []byte("\U00010000"))
		c.closeHandshake(closeCode(1000, ""), 1000)
	})
	add("6_unfinished_at_end", fails(1007, frames(cfFrame{op: opText, payload: []byte("ok")},
		cfFrame{fin: true, op: opCont, payload: []byte("\xe2\x82")})))

	// 7. Close.
	add("7_close_empty", func(c *cfClient) { c.closeHandshake(nil, 1000) })
	add("7_close_one_byte", fails(1002, closeFrame([]byte{0x03}).bytes()))
	add("7_close_reason_123", func(c *cfClient) {
		c.closeHandshake(closeCode(1000, strings.Repeat("*", 123)), 1000)
	})
	add("7_close_payload_126", fails(1002, closeFrame(closeCode(1000, strings.Repeat("*", 124))).bytes()))
	add("7_close_reason_invalid_utf8", fails(1002, closeFrame(closeCode(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")).bytes()))
	for _, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		add(fmt.Sprintf("7_close_code_%d", code), func(c *cfClient) { c.closeHandshake(closeCode(code, "bye"), code) })
	}
	for _, code := range []int{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		add(fmt.Sprintf("7_close_invalid_code_%d", code), fails(1002, closeFrame(closeCode(code, "")).bytes()))
	}
	add("7_nothing_after_close", func(c *cfClient) {
		// A text and a ping after the close: neither is answered.
		c.send(frames(closeFrame(closeCode(1000, "")), text("after close"), ping("after close")))
		f, err := c.read(10 * time.Second)
		if err != nil || f.op != opClose {
			c.t.Fatalf("want the close reply first and only, got opcode %d %q, %v", f.op, f.payload, err)
		}
		c.checkClosePayload(f.payload, 1000)
		c.expectEOF(time.Now())
	})
	add("7_message_before_close_delivered", func(c *cfClient) {
		p := bytes.Repeat([]byte("m"), 256<<10)
		c.send(frames(text(string(p)), closeFrame(closeCode(1000, "")), ping("after close")))
		c.expect(opText, p)
		f, err := c.read(10 * time.Second)
		if err != nil || f.op != opClose {
			c.t.Fatalf("want the close reply after the echo, got opcode %d, %v", f.op, err)
		}
		c.checkClosePayload(f.payload, 1000)
		c.expectEOF(time.Now())
	})

	// 9. Large messages, up to the limit (--max-package-size 1MiB).
	add("9_text_at_limit", echoes(bytes.Repeat([]byte("L"), cfLimit), opText))
	add("9_binary_at_limit_fragmented", func(c *cfClient) {
		p := bytes.Repeat([]byte{0x42}, cfLimit)
		var b []byte
		for i := 0; i < 16; i++ {
			op := byte(opCont)
			if i == 0 {
				op = opBinary
			}
			b = append(b, cfFrame{fin: i == 15, op: op, payload: p[i*cfLimit/16 : (i+1)*cfLimit/16]}.bytes()...)
		}
		c.send(b)
		c.expect(opBinary, p)
		c.closeHandshake(closeCode(1000, ""), 1000)
	})
	add("9_over_limit", func(c *cfClient) {
		go c.c.Write(binFrame(make([]byte, cfLimit+1)).bytes()) // the server may close before it has read it all
		c.expectClose(1009)
	})
	add("9_over_limit_fragmented", func(c *cfClient) {
		half := make([]byte, cfLimit/2+1)
		go c.c.Write(frames(cfFrame{op: opBinary, payload: half}, cfFrame{fin: true, op: opCont, payload: half}))
		c.expectClose(1009)
	})

	// 10. Bursts: many messages in one write come back complete and in order.
	add("10_burst_1000", func(c *cfClient) {
		var b []byte
		for i := 0; i < 1000; i++ {
			b = append(b, text(fmt.Sprint("burst ", i)).bytes()...)
		}
		c.send(b)
		for i := 0; i < 1000; i++ {
			c.expect(opText, []byte(fmt.Sprint("burst ", i)))
		}
		c.closeHandshake(closeCode(1000, ""), 1000)
	})
	return cs
}

// cfPorts runs f against the WebSocket port and the HTTP port (upgrade).
func cfPorts(t *testing.T, s *server, f func(t *testing.T, addr string)) {
	for _, p := range []struct{ name, addr string }{{"ws_port", s.wsAddr}, {"http_port", s.httpAddr}} {
		t.Run(p.name, func(t *testing.T) { f(t, p.addr) })
	}
}

// TestConformance runs every case once per mode and port.
func TestConformance(t *testing.T) {
	cases := cfCases()
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 2, "--max-package-size", "1MiB")
		cfPorts(t, s, func(t *testing.T, addr string) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) { tc.run(cfDial(t, addr)) })
			}
		})
	})
}

// TestConformanceRaces repeats the timing-sensitive cases many times:
// what the issue saw fail in one run out of several must fail here first.
func TestConformanceRaces(t *testing.T) {
	const rounds = 40
	races := []cfCase{
		{"invalid_utf8_then_ping", fails(1007, text("bad \xff").bytes())},
		{"rsv_then_ping", fails(1002, cfFrame{fin: true, rsv: 0x40, op: opText, payload: []byte("x")}.bytes())},
		{"bad_close_code", fails(1002, closeFrame(closeCode(1005, "")).bytes())},
		{"close_reply_and_eof", func(c *cfClient) { c.closeHandshake(closeCode(1001, ""), 1001) }},
		{"echo_then_close", func(c *cfClient) {
			c.send(frames(text("last words"), closeFrame(closeCode(1000, ""))))
			c.expect(opText, []byte("last words"))
			f, err := c.read(10 * time.Second)
			if err != nil || f.op != opClose {
				c.t.Fatalf("want the close reply, got opcode %d, %v", f.op, err)
			}
			c.expectEOF(time.Now())
		}},
	}
	big := cfCases()
	for _, tc := range big {
		if tc.name == "7_message_before_close_delivered" || tc.name == "6_invalid_in_fragment_2_of_3_fails_fast" {
			races = append(races, tc)
		}
	}
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 2, "--max-package-size", "1MiB")
		cfPorts(t, s, func(t *testing.T, addr string) {
			for _, tc := range races {
				t.Run(tc.name, func(t *testing.T) {
					for i := 0; i < rounds && !t.Failed(); i++ {
						tc.run(cfDial(t, addr))
					}
				})
			}
		})
	})
}

// TestConformanceTLS runs every case over TLS (wss on the WebSocket port
// and by upgrade on the HTTPS port), in both modes: the master terminates
// TLS in PROCESS mode, each worker in BASE mode, and the closing handshake
// ends with close_notify and EOF as it ends with FIN in plain TCP. The
// timing-sensitive cases repeat as in TestConformanceRaces, fewer times.
func TestConformanceTLS(t *testing.T) {
	const rounds = 10
	cases := cfCases()
	ca := newTestCA(t)
	inModes(t, func(t *testing.T, mode string) {
		s, _, _ := startTLSServer(t, ca, mode, 2, "--max-package-size", "1MiB")
		cfPorts(t, s, func(t *testing.T, addr string) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) { tc.run(cfDialTLS(t, addr, ca.TLSConfig())) })
			}
			t.Run("races", func(t *testing.T) {
				for _, tc := range cases {
					if tc.name != "7_message_before_close_delivered" && tc.name != "6_invalid_in_fragment_2_of_3_fails_fast" {
						continue
					}
					for i := 0; i < rounds && !t.Failed(); i++ {
						tc.run(cfDialTLS(t, addr, ca.TLSConfig()))
					}
				}
			})
		})
	})
}
