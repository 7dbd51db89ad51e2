// Package client speaks the daemon's HTTP+JSON API over its unix socket. It
// is what the CNI plugin uses, so it depends on nothing beyond the standard
// library and the wire types.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

// ErrUnreachable marks every failure that means "the daemon is not there to
// serve us right now": dial failure, timeout, broken connection, an untrusted
// socket, or a 5xx answer. Callers apply their fail policy to it.
var ErrUnreachable = errors.New("weftd unreachable")

// ErrUntrustedSocket is wrapped (together with ErrUnreachable) when a root
// caller refuses to talk to a socket that root does not own: a non-root user
// must not be able to plant a fake daemon that receives pod events.
var ErrUntrustedSocket = errors.New("untrusted socket")

// APIError is a 4xx answer: the daemon is there and rejected the request.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("weftd answered %d: %s", e.Status, e.Message)
}

// serverError is a 5xx answer. It counts as unreachable: the daemon cannot
// serve the request now, and the request itself was fine.
type serverError struct {
	method, path string
	status       int
	msg          string
}

func (e *serverError) Error() string {
	return fmt.Sprintf("%v: %s %s answered %d: %s", ErrUnreachable, e.method, e.path, e.status, e.msg)
}

func (e *serverError) Unwrap() error { return ErrUnreachable }

// maxResponseBytes caps what is read of any answer; the largest one, the
// status document, is a few KiB.
const maxResponseBytes = 1 << 20

// Client talks to one daemon socket. The zero value is not usable; use New.
type Client struct {
	socket  string
	timeout time.Duration
	hc      *http.Client
	// trustedUID is the only socket owner and peer uid accepted; -1 accepts
	// anyone (used when not running as root, where a user can only reach
	// sockets it has permission for anyway).
	trustedUID int
}

// New returns a client for the daemon socket at path; every request,
// including the dial, is bounded by timeout.
func New(socket string, timeout time.Duration) *Client {
	trusted := -1
	if os.Geteuid() == 0 {
		trusted = 0
	}
	return newClient(socket, timeout, trusted)
}

func newClient(socket string, timeout time.Duration, trustedUID int) *Client {
	c := &Client{socket: socket, timeout: timeout, trustedUID: trustedUID}
	c.hc = &http.Client{
		Transport: &http.Transport{
			DialContext:            c.dial,
			DisableKeepAlives:      true, // the plugin makes one request and exits
			MaxResponseHeaderBytes: 64 << 10,
			ResponseHeaderTimeout:  timeout,
		},
		Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return c
}

// Socket returns the socket path the client talks to.
func (c *Client) Socket() string { return c.socket }

func (c *Client) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	if c.trustedUID >= 0 {
		if err := checkSocketFile(c.socket, c.trustedUID); err != nil {
			return nil, err
		}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, err
	}
	if c.trustedUID >= 0 {
		// The file check above can race with a rename; the peer credentials
		// of the connected socket cannot.
		if err := checkPeer(conn, c.socket, c.trustedUID); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

func checkSocketFile(path string, uid int) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err // a missing socket is the ordinary "daemon not running"
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%w: %s is not a socket (mode %v)", ErrUntrustedSocket, path, fi.Mode())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%w: %s: cannot read owner", ErrUntrustedSocket, path)
	}
	if int(st.Uid) != uid {
		return fmt.Errorf("%w: %s is owned by uid %d, want %d", ErrUntrustedSocket, path, st.Uid, uid)
	}
	return nil
}

func checkPeer(conn net.Conn, path string, uid int) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("%w: %s: not a unix connection", ErrUntrustedSocket, path)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("peer credentials of %s: %w", path, err)
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("peer credentials of %s: %w", path, err)
	}
	if credErr != nil {
		return fmt.Errorf("peer credentials of %s: %w", path, credErr)
	}
	if int(cred.Uid) != uid {
		return fmt.Errorf("%w: %s is served by uid %d (pid %d), want %d", ErrUntrustedSocket, path, cred.Uid, cred.Pid, uid)
	}
	return nil
}

// do sends one request and decodes a 2xx JSON answer into out (if non-nil).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s request: %w", path, err)
		}
		body = bytes.NewReader(data)
	}
	// The host part is ignored by the unix dialer; it only has to be valid.
	req, err := http.NewRequestWithContext(ctx, method, "http://weftd"+path, body)
	if err != nil {
		return fmt.Errorf("build %s %s request: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s %s via %s: %w", ErrUnreachable, method, path, c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("%w: %s %s via %s: read answer: %w", ErrUnreachable, method, path, c.socket, err)
	}
	if len(data) > maxResponseBytes {
		return fmt.Errorf("%s %s: answer larger than %d bytes", method, path, maxResponseBytes)
	}
	switch {
	case resp.StatusCode >= 500:
		return &serverError{method: method, path: path, status: resp.StatusCode, msg: errorMessage(data)}
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return &APIError{Status: resp.StatusCode, Message: errorMessage(data)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode %s answer: %w", path, err)
	}
	return nil
}

// errorMessage extracts api.Error.Error from a body, falling back to the
// (truncated) raw text for answers that are not ours, e.g. a proxy's page.
func errorMessage(data []byte) string {
	var e api.Error
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := string(bytes.TrimSpace(data))
	if len(s) > 256 {
		s = s[:256] + "…"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}

// Add reports a pod attachment.
func (c *Client) Add(ctx context.Context, ev api.Event) error {
	return c.do(ctx, http.MethodPost, api.PathAdd, ev, nil)
}

// Del reports the removal of a pod attachment.
func (c *Client) Del(ctx context.Context, ev api.Event) error {
	return c.do(ctx, http.MethodPost, api.PathDel, ev, nil)
}

// Check asks whether an attachment is known and the node ready.
func (c *Client) Check(ctx context.Context, req api.CheckRequest) (api.CheckResponse, error) {
	var resp api.CheckResponse
	err := c.do(ctx, http.MethodPost, api.PathCheck, req, &resp)
	return resp, err
}

// GC tells the daemon which attachments of a network are still valid.
func (c *Client) GC(ctx context.Context, req api.GCRequest) (api.GCResponse, error) {
	var resp api.GCResponse
	err := c.do(ctx, http.MethodPost, api.PathGC, req, &resp)
	return resp, err
}

// Status fetches the daemon's status document.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var st api.Status
	err := c.do(ctx, http.MethodGet, api.PathStatus, nil, &st)
	return st, err
}

// Ready reports the daemon's readiness (/readyz). A daemon that answers
// 503 is reachable and not ready: (false, nil).
func (c *Client) Ready(ctx context.Context) (bool, error) {
	err := c.do(ctx, http.MethodGet, api.PathReadyz, nil, nil)
	if err == nil {
		return true, nil
	}
	var se *serverError
	if errors.As(err, &se) && se.status == http.StatusServiceUnavailable {
		return false, nil
	}
	return false, err
}
