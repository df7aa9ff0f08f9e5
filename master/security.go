package master

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// EnvClusterToken is --cluster-token's variable, EnvCluster --cluster's
// (whose URLs may carry credentials). The master reads them (as the flags);
// filterEnv keeps them from the workers, which never talk to NATS.
const (
	EnvClusterToken = "FORKD_CLUSTER_TOKEN"
	EnvCluster      = "FORKD_CLUSTER"
)

// Session ticket keys: a new one every Options.TicketRotate (default
// DefaultTicketRotate), the last TicketKeep kept for decryption, so a
// ticket resumes for up to TicketRotate x TicketKeep after it was issued.
const (
	DefaultTicketRotate = time.Hour
	TicketKeep          = 24
)

// security is the master's share of TLS and the operator API: the
// certificates it read, the ticket keys it made, and the token. Workers
// learn them from a Secrets frame (never from their environment or
// files): right after Welcome, and again when they change.
type security struct {
	mu    sync.Mutex // orders Secrets frames: a worker never sees an older set after a newer one
	certs []*tls.Certificate
	pems  [][2][]byte          // per listener: cert and key PEM as read
	tls   map[int]*reactor.TLS // PROCESS mode: the master's own TLS per listener
	keys  [][32]byte
	stop  chan struct{}

	perIP     *reactor.SharedIPCounter // BASE: the master's view of the table, to clear rows
	perIPFile *os.File
	perIPRows []bool // in use
	seed      uint64 // the table's hash seed, the same in every worker
}

// loadCerts reads every listener's certificate and key files. Nothing is
// changed unless all of them are good.
func (m *Master) loadCerts() ([]*tls.Certificate, [][2][]byte, error) {
	ls := m.opts.Listeners
	certs := make([]*tls.Certificate, len(ls))
	pems := make([][2][]byte, len(ls))
	for i, l := range ls {
		if l.TLSCert == "" && l.TLSKey == "" {
			continue
		}
		if l.TLSCert == "" || l.TLSKey == "" {
			return nil, nil, fmt.Errorf("listener %s: tls: need both a certificate and a key file", l.Name)
		}
		cp, err := os.ReadFile(l.TLSCert)
		if err != nil {
			return nil, nil, fmt.Errorf("listener %s: tls certificate: %w", l.Name, err)
		}
		kp, err := os.ReadFile(l.TLSKey)
		if err != nil {
			return nil, nil, fmt.Errorf("listener %s: tls key: %w", l.Name, err)
		}
		c, err := reactor.ParseKeyPair(cp, kp)
		if err != nil {
			return nil, nil, fmt.Errorf("listener %s: certificate %s, key %s: %w", l.Name, l.TLSCert, l.TLSKey, err)
		}
		certs[i], pems[i] = c, [2][]byte{cp, kp}
	}
	return certs, pems, nil
}

// setupSecurity runs before the listeners open: it reads the certificates
// (a bad one fails the start with its reason) and makes the first ticket key.
func (m *Master) setupSecurity() error {
	sec := &m.sec
	certs, pems, err := m.loadCerts()
	if err != nil {
		return err
	}
	sec.certs, sec.pems = certs, pems
	sec.tls = map[int]*reactor.TLS{}
	k, err := newTicketKey()
	if err != nil {
		return err
	}
	sec.keys = [][32]byte{k}
	sec.stop = make(chan struct{})
	for i, l := range m.opts.Listeners {
		if m.listenerTLS(i) {
			m.logCert(l.Name, certs[i])
		}
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("master: random seed: %w", err)
	}
	sec.seed = binary.LittleEndian.Uint64(b[:])
	if m.opts.MaxConnPerIP > 0 && m.opts.Mode == ModeBase {
		// A slot has at most two live processes (the serving one and its
		// replacement, or the replacement and the old one draining: a
		// reload waits for the old to exit before the next slot, and a
		// dead process's row is freed when it is reaped), so a row is
		// always free; the spare ones are margin.
		rows := 2*m.opts.Workers + 4
		f, err := reactor.NewSharedIPFile(rows)
		if err != nil {
			return fmt.Errorf("master: --max-conn-per-ip: %w", err)
		}
		c, err := reactor.OpenSharedIPCounter(f, rows, -1, m.opts.MaxConnPerIP, 0)
		if err != nil {
			f.Close()
			return fmt.Errorf("master: --max-conn-per-ip: %w", err)
		}
		sec.perIP, sec.perIPFile, sec.perIPRows = c, f, make([]bool, rows)
	}
	return nil
}

func (m *Master) closeSecurity() {
	if m.sec.stop != nil {
		close(m.sec.stop)
	}
	if m.sec.perIP != nil {
		m.sec.perIP.Close()
		m.sec.perIPFile.Close()
	}
}

// listenerTLS reports whether listener i terminates TLS.
func (m *Master) listenerTLS(i int) bool {
	l := m.opts.Listeners[i]
	return l.TLSCert != "" || l.TLSConfig != nil
}

func (m *Master) logCert(listener string, c *tls.Certificate) {
	ev := m.log.Info().Str("listener", listener)
	if c == nil {
		ev.Msg("tls: the program's own tls.Config")
		return
	}
	subject, names, notAfter := reactor.DescribeCert(c)
	ev.Str("subject", subject).Strs("names", names).Time("not_after", notAfter).Msg("tls certificate loaded")
	if time.Now().After(notAfter) {
		m.log.Warn().Str("listener", listener).Time("not_after", notAfter).Msg("tls certificate has expired")
	}
}

// reactorTLS returns PROCESS mode's TLS state for listener i (nil: plain).
func (m *Master) reactorTLS(i int) *reactor.TLS {
	if !m.listenerTLS(i) {
		return nil
	}
	t := reactor.NewTLS(m.opts.Listeners[i].TLSConfig)
	m.sec.mu.Lock()
	defer m.sec.mu.Unlock()
	if c := m.sec.certs[i]; c != nil {
		t.SetCertificate(c)
	}
	t.SetTicketKeys(m.sec.keys)
	m.sec.tls[i] = t
	return t
}

func newTicketKey() ([32]byte, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("master: tls ticket key: %w", err)
	}
	return k, nil
}

// rotateTickets makes a new ticket key every TicketRotate and hands the
// set to every process terminating TLS.
func (m *Master) rotateTickets() {
	every := m.opts.TicketRotate
	if every <= 0 {
		every = DefaultTicketRotate
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.sec.stop:
			return
		case <-t.C:
		}
		k, err := newTicketKey()
		if err != nil {
			m.log.Error().Err(err).Msg("tls ticket key rotation")
			continue
		}
		m.sec.mu.Lock()
		m.sec.keys = append([][32]byte{k}, m.sec.keys...)
		if len(m.sec.keys) > TicketKeep {
			m.sec.keys = m.sec.keys[:TicketKeep]
		}
		m.sec.mu.Unlock()
		m.applySecrets()
		m.log.Debug().Int("keys", len(m.sec.keys)).Msg("tls ticket keys rotated")
	}
}

// ReloadCerts re-reads every certificate file. On any error nothing
// changes: the certificates in use stay, and the error says why.
func (m *Master) ReloadCerts() error {
	files := false
	for i := range m.opts.Listeners {
		files = files || m.opts.Listeners[i].TLSCert != ""
	}
	if !files {
		return nil
	}
	certs, pems, err := m.loadCerts()
	if err != nil {
		m.log.Error().Err(err).Msg("tls: reload refused, the certificates in use stay")
		return fmt.Errorf("tls: %w; the certificates in use stay, no worker was replaced", tagged{err, ErrCertificates})
	}
	m.sec.mu.Lock()
	m.sec.certs, m.sec.pems = certs, pems
	m.sec.mu.Unlock()
	for i, l := range m.opts.Listeners {
		if certs[i] != nil {
			m.logCert(l.Name, certs[i])
		}
	}
	m.applySecrets()
	return nil
}

// applySecrets puts the current certificates and keys in use: in the
// master's reactor (PROCESS mode), and in every live worker (BASE mode).
func (m *Master) applySecrets() {
	m.sec.mu.Lock()
	defer m.sec.mu.Unlock()
	for i, t := range m.sec.tls {
		if c := m.sec.certs[i]; c != nil {
			t.SetCertificate(c)
		}
		t.SetTicketKeys(m.sec.keys)
	}
	if m.opts.Mode != ModeBase {
		return
	}
	m.mu.Lock()
	var procs []*proc
	for _, sl := range m.slots {
		if !sl.worker() { // task workers and user processes hold no listener
			continue
		}
		for _, p := range append([]*proc{sl.cur, sl.next}, sl.old...) {
			if p != nil && p.welcomed.Load() {
				procs = append(procs, p)
			}
		}
	}
	m.mu.Unlock()
	for _, p := range procs {
		m.sendSecretsLocked(p)
	}
}

// welcome answers a worker's Hello: Welcome, then its Secrets, in that
// order and under the lock that orders every Secrets frame.
func (m *Master) welcome(p *proc) {
	m.sec.mu.Lock()
	defer m.sec.mu.Unlock()
	p.out.Send(&ipc.Header{Type: ipc.TypeWelcome}, nil, nil)
	m.sendSecretsLocked(p)
	p.welcomed.Store(true)
	m.sendNodeLocked(p)
}

func (m *Master) sendSecretsLocked(p *proc) {
	s := ipc.Secrets{APIToken: m.opts.APIToken}
	if m.opts.Mode == ModeBase && p.slot.worker() {
		for i := range m.opts.Listeners {
			if !m.listenerTLS(i) {
				continue
			}
			c := ipc.CertPEM{Listener: i}
			if m.sec.certs[i] != nil {
				c.Cert, c.Key = m.sec.pems[i][0], m.sec.pems[i][1]
			}
			s.Certs = append(s.Certs, c)
		}
		s.TicketKeys = m.sec.keys
	}
	b, _ := json.Marshal(&s)
	if err := p.out.Send(&ipc.Header{Type: ipc.TypeSecrets}, b, nil); err != nil {
		m.log.Warn().Err(err).Int("worker", p.slot.id).Int("worker_pid", p.pid).Msg("secrets not sent")
	}
}

// perIPRow gives a BASE worker process a row of the shared per-address
// table (-1: none free, it counts only its own connections).
func (m *Master) perIPRow() int {
	if m.sec.perIP == nil {
		return -1
	}
	m.sec.mu.Lock()
	defer m.sec.mu.Unlock()
	for i, used := range m.sec.perIPRows {
		if !used {
			m.sec.perIPRows[i] = true
			return i
		}
	}
	return -1
}

// freePerIPRow zeroes a dead process's row (its connections died with it)
// and frees it.
func (m *Master) freePerIPRow(row int) {
	if m.sec.perIP == nil || row < 0 {
		return
	}
	m.sec.perIP.ClearRow(row)
	m.sec.mu.Lock()
	m.sec.perIPRows[row] = false
	m.sec.mu.Unlock()
}

// chownRunFiles lets the --user the workers run as use the control socket
// (chowned to it; the master checks every peer's uid) and read the pid file,
// which stays root's, mode 0644: a pid file the workers' user could write
// would let a compromised worker aim root's `kill $(cat server.pid)`, or a
// PIDFile= of a service manager, at any process.
func (m *Master) chownRunFiles(pidFile, socket string) error {
	cr := m.opts.Credential
	if cr == nil {
		return nil
	}
	if err := os.Chmod(pidFile, 0o644); err != nil {
		return fmt.Errorf("master: chmod %s: %w", pidFile, err)
	}
	if err := os.Chown(socket, int(cr.Uid), int(cr.Gid)); err != nil {
		return fmt.Errorf("master: chown %s to %d:%d: %w", socket, cr.Uid, cr.Gid, err)
	}
	return nil
}

// controlUID reports whether a control-socket peer with uid may command
// the master: root, the master's own user, and the --user of the workers.
func (m *Master) controlUID(uid uint32) bool {
	if uid == 0 || uid == uint32(os.Getuid()) {
		return true
	}
	cr := m.opts.Credential
	return cr != nil && uid == cr.Uid
}

// ReloadTLS is `reload --tls-only`: the certificates are re-read and put
// in use by every process serving TLS, and no worker is replaced (in BASE
// mode a reload would end the replaced workers' WebSockets with 1001).
func (m *Master) ReloadTLS() ([]ReloadLine, error) {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	if err := m.ReloadCerts(); err != nil {
		return nil, err
	}
	var lines []ReloadLine
	for i, l := range m.opts.Listeners {
		if l.TLSCert != "" {
			lines = append(lines, ReloadLine{ID: i, Kind: "listener " + l.Name, Note: "certificate re-read from " + l.TLSCert})
		}
	}
	if lines == nil {
		return nil, fmt.Errorf("no listener has certificate files to re-read")
	}
	return lines, nil
}

// listenerStatus describes listener i for `status`, with its certificate.
func (m *Master) listenerStatus(i int, l Listener) ListenerStatus {
	ls := ListenerStatus{Name: l.Name, Addr: m.addrs[i], Protocol: l.Protocol, TLS: m.listenerTLS(i)}
	m.sec.mu.Lock()
	var c *tls.Certificate
	if i < len(m.sec.certs) {
		c = m.sec.certs[i]
	}
	m.sec.mu.Unlock()
	if subject, _, notAfter := reactor.DescribeCert(c); subject != "" {
		ls.CertSubject, ls.CertExpires = subject, notAfter.UTC().Format(time.RFC3339)
	}
	return ls
}
