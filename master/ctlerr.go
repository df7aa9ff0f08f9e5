package master

import (
	"errors"
	"fmt"
)

// Errors across the control socket: the master answers a failed command
// with a code (Response.Code) beside its text; Call returns a
// *ControlError, which errors.Is matches against these sentinels, so the
// CLI and the root package test errors.Is rather than the text.
var (
	// ErrPermission means the master refused a control client, or the
	// client may not reach the run dir's files: said at once, never a wait.
	ErrPermission     = errors.New("permission denied")
	ErrBadRequest     = errors.New("master: control: bad request")
	ErrUnknownCommand = errors.New("master: control: unknown command")
	ErrStopping       = errors.New("master: server is stopping")
	ErrReloadFailed   = errors.New("master: reload failed")
	ErrCertificates   = errors.New("master: tls: certificates refused")
	ErrReopenLogs     = errors.New("master: reopen logs failed")
	// ErrNodeNoAnswer: connections --cluster, the node asked for a page
	// did not give it (within cluster.ConnsWait, or NATS is down).
	ErrNodeNoAnswer = errors.New("master: cluster: the node did not answer")
)

// Control error codes, in Response.Code. Part of the control protocol (a
// CLI of one build may talk to a master of another): never rename.
const (
	CodePermission     = "permission"
	CodeBadRequest     = "bad-request"
	CodeUnknownCommand = "unknown-command"
	CodeStopping       = "stopping"
	CodeReloadFailed   = "reload-failed"
	CodeCertificates   = "certificates"
	CodeReopenLogs     = "reopen-logs"
	CodeNodeNoAnswer   = "node-no-answer"
)

var codeErrs = map[string]error{
	CodePermission:     ErrPermission,
	CodeBadRequest:     ErrBadRequest,
	CodeUnknownCommand: ErrUnknownCommand,
	CodeStopping:       ErrStopping,
	CodeReloadFailed:   ErrReloadFailed,
	CodeCertificates:   ErrCertificates,
	CodeReopenLogs:     ErrReopenLogs,
	CodeNodeNoAnswer:   ErrNodeNoAnswer,
}

// ControlError is a command the master refused or failed: its code and its
// text, as the master said it.
type ControlError struct {
	Code string
	Text string
}

// Error is the master's text, unchanged (the CLI prints it).
func (e *ControlError) Error() string { return e.Text }

// Unwrap returns the sentinel for e's code (nil for a code this build does
// not know), so errors.Is(err, ErrReloadFailed) works across the socket.
func (e *ControlError) Unwrap() error { return codeErrs[e.Code] }

// codeOf gives the code for err, the failure of command cmd: the most
// specific sentinel err wraps, else the command's own.
func codeOf(cmd string, err error) string {
	for _, c := range []string{CodeStopping, CodeCertificates} {
		if errors.Is(err, codeErrs[c]) {
			return c
		}
	}
	switch cmd {
	case "reload":
		return CodeReloadFailed
	case "reopen-logs":
		return CodeReopenLogs
	}
	return ""
}

// failed fills resp's error from err, the failure of command cmd.
func (resp *Response) failed(cmd string, err error) {
	resp.Error, resp.Code = err.Error(), codeOf(cmd, err)
}

// refuse fills resp's error with a code and a text.
func (resp *Response) refuse(code, format string, args ...any) {
	resp.Error, resp.Code = fmt.Sprintf(format, args...), code
}

// tagged is err, unchanged in its text, that also matches tag with
// errors.Is: a sentinel added without rewording what the operator reads.
type tagged struct {
	err, tag error
}

func (t tagged) Error() string        { return t.err.Error() }
func (t tagged) Unwrap() error        { return t.err }
func (t tagged) Is(target error) bool { return target == t.tag }
