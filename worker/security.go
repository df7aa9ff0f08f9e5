package worker

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// workerSecrets is what the master's Secrets frames told this worker.
type workerSecrets struct {
	mu    sync.Mutex
	token string
	tls   []*reactor.TLS // BASE: per listener, nil for plain ones
	perIP reactor.IPLimiter
}

func (s *workerSecrets) tlsFor(i int) *reactor.TLS {
	if i < len(s.tls) {
		return s.tls[i]
	}
	return nil
}

// setupSecurity applies the first Secrets frame (before serving) and
// opens the per-address limiter.
func (w *Worker) setupSecurity(payload []byte, own []*tls.Config) error {
	var s ipc.Secrets
	if err := json.Unmarshal(payload, &s); err != nil {
		return fmt.Errorf("worker: bad secrets frame: %w", err)
	}
	w.sec.token = s.APIToken
	if w.cfg.Mode == ModeBase && !w.cfg.Task && w.cfg.Process == "" {
		w.sec.tls = make([]*reactor.TLS, len(w.cfg.Listeners))
		for i, l := range w.cfg.Listeners {
			if !l.TLS {
				continue
			}
			var base *tls.Config
			if i < len(own) {
				base = own[i]
			}
			w.sec.tls[i] = reactor.NewTLS(base)
		}
		if err := w.applyTLS(&s); err != nil {
			return err
		}
		if n := w.cfg.MaxConnPerIP; n > 0 {
			if w.cfg.PerIPFD >= 0 {
				f := os.NewFile(uintptr(w.cfg.PerIPFD), "conn-per-ip")
				c, err := reactor.OpenSharedIPCounter(f, w.cfg.PerIPRows, w.cfg.PerIPRow, n, w.cfg.PerIPSeed)
				f.Close() // the mapping stays
				if err != nil {
					return fmt.Errorf("worker: --max-conn-per-ip: %w", err)
				}
				w.sec.perIP = c
			} else {
				w.sec.perIP = reactor.NewIPCounter(n)
			}
		}
	}
	return nil
}

func (w *Worker) applyTLS(s *ipc.Secrets) error {
	for _, c := range s.Certs {
		t := w.sec.tlsFor(c.Listener)
		if t == nil {
			return fmt.Errorf("worker: secrets: listener %d does not terminate TLS here", c.Listener)
		}
		if len(c.Cert) == 0 {
			continue
		}
		cert, err := reactor.ParseKeyPair(c.Cert, c.Key)
		if err != nil {
			return fmt.Errorf("worker: listener %s: %w", w.cfg.Listeners[c.Listener].Name, err)
		}
		t.SetCertificate(cert)
	}
	for _, t := range w.sec.tls {
		if t != nil {
			t.SetTicketKeys(s.TicketKeys)
		}
	}
	return nil
}

// updateSecrets applies a later Secrets frame (a reload's certificates,
// rotated ticket keys). The master checked the certificates before
// sending them; one that does not parse here keeps the one in use.
func (w *Worker) updateSecrets(payload []byte) {
	var s ipc.Secrets
	if err := json.Unmarshal(payload, &s); err != nil {
		w.log.Error().Err(err).Msg("bad secrets frame")
		return
	}
	w.sec.mu.Lock()
	w.sec.token = s.APIToken
	w.sec.mu.Unlock()
	if err := w.applyTLS(&s); err != nil {
		w.log.Error().Err(err).Msg("tls update refused")
		return
	}
	if len(s.Certs) > 0 {
		w.log.Info().Int("listeners", len(s.Certs)).Msg("tls certificates updated")
	}
}

// APIToken is the operator API's bearer token ("" = none).
func (w *Worker) APIToken() string {
	w.sec.mu.Lock()
	defer w.sec.mu.Unlock()
	return w.sec.token
}
