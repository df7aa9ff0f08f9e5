package reactor

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// TLS is one listener's TLS state: the certificate in use and the session
// ticket keys, both replaceable while the listener serves. A new
// certificate is used from the next handshake on; connections already
// open keep the session they negotiated.
type TLS struct {
	cert atomic.Pointer[tls.Certificate]
	cfg  *tls.Config
}

// NewTLS returns a listener's TLS state built on base (nil: defaults).
// Whatever base leaves unset gets the server's defaults: TLS 1.2 and up,
// ALPN http/1.1 (WebSocket upgrades are HTTP/1.1 requests). A certificate
// set with SetCertificate is served before base's own.
func NewTLS(base *tls.Config) *TLS {
	t := &TLS{}
	var cfg *tls.Config
	if base != nil {
		cfg = base.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if len(cfg.NextProtos) == 0 {
		cfg.NextProtos = []string{"http/1.1"}
	}
	userGet := cfg.GetCertificate
	cfg.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if c := t.cert.Load(); c != nil {
			return c, nil
		}
		if userGet != nil {
			return userGet(h)
		}
		return nil, nil // crypto/tls falls back to cfg.Certificates
	}
	t.cfg = cfg
	return t
}

// Config returns the tls.Config the listener serves with.
func (t *TLS) Config() *tls.Config { return t.cfg }

// SetCertificate replaces the certificate served from the next handshake on.
func (t *TLS) SetCertificate(c *tls.Certificate) { t.cert.Store(c) }

// Certificate returns the certificate set with SetCertificate, or nil.
func (t *TLS) Certificate() *tls.Certificate { return t.cert.Load() }

// SetTicketKeys replaces the session ticket keys: the first encrypts new
// tickets, all decrypt. Every process serving a port gets the same keys,
// so a session resumes on whichever process accepts the next connection.
func (t *TLS) SetTicketKeys(keys [][32]byte) {
	if len(keys) > 0 {
		t.cfg.SetSessionTicketKeys(keys)
	}
}

// ParseKeyPair parses a PEM certificate chain and its private key and
// checks that they belong together and that the leaf certificate parses.
// The error names the problem, never the key's bytes.
func ParseKeyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("reactor: %w", err)
	}
	if c.Leaf == nil {
		if len(c.Certificate) == 0 {
			return nil, errors.New("reactor: tls: no certificate in the certificate file")
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("reactor: tls: leaf certificate: %w", err)
		}
		c.Leaf = leaf
	}
	return &c, nil
}

// DescribeCert is what the logs say about a certificate: never key material.
func DescribeCert(c *tls.Certificate) (subject string, names []string, notAfter time.Time) {
	if c == nil || c.Leaf == nil {
		return "", nil, time.Time{}
	}
	return c.Leaf.Subject.String(), c.Leaf.DNSNames, c.Leaf.NotAfter
}

// wrapTLS makes an accepted connection a server-side TLS one; the TCP
// connection stays reachable through it (tls.Conn.NetConn, for the
// drain's half-close, see shutIdle).
func wrapTLS(nc net.Conn, t *TLS) net.Conn {
	return tls.Server(nc, t.cfg)
}

// plainOnTLS answers a plain HTTP request sent to a TLS port, in plain
// HTTP on the TCP connection underneath (as net/http does), and reports
// whether err was that. Other handshake failures get no answer: there
// is no protocol to answer them in.
func plainOnTLS(err error) bool {
	var re tls.RecordHeaderError
	if !errors.As(err, &re) || re.Conn == nil {
		return false
	}
	switch string(re.RecordHeader[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH", "CONNE":
		_ = re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		return true
	}
	return false
}
