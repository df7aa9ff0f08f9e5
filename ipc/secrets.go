package ipc

// Secrets is a TypeSecrets frame's payload (JSON): what a worker must know
// but must not find in its environment or command line, where other
// processes could read it, nor in a file it might not be allowed to read
// (a worker may run as an unprivileged user). The master reads the files
// and sends the contents over the ipc pipe, which only it and the worker
// hold. Never logged.
type Secrets struct {
	// APIToken is the bearer token of the operator API ("" = none).
	APIToken string `json:"api_token,omitempty"`
	// Certs are the TLS certificates of the listeners a BASE-mode worker
	// serves, by listener index; an entry without PEM keeps the worker's
	// own configuration (the program's tls.Config).
	Certs []CertPEM `json:"certs,omitempty"`
	// TicketKeys are the TLS session ticket keys, newest first: the first
	// encrypts, all decrypt. Every process gets the same keys, so a
	// session resumes on any worker.
	TicketKeys [][32]byte `json:"ticket_keys,omitempty"`
}

// CertPEM is one listener's certificate chain and private key, PEM.
type CertPEM struct {
	Listener int    `json:"listener"`
	Cert     []byte `json:"cert"`
	Key      []byte `json:"key"`
}
