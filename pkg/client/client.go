// Package client speaks the daemon's HTTP+JSON API over its unix socket. It
// is what the CNI plugin uses, so it depends on nothing beyond the standard
// library and the wire types — and not on net/http either: the plugin runs
// on every pod start-up, and net/http brings TLS, HTTP/2 and compression,
// which made the binary half again as large and slower to start. One
// request per connection over a local socket needs none of that.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"os"
	"strconv"
	"strings"
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
	return &Client{socket: socket, timeout: timeout, trustedUID: trustedUID}
}

// Socket returns the socket path the client talks to.
func (c *Client) Socket() string { return c.socket }

// dial connects to the socket and checks who serves it. The connection is a
// plain blocking socket, not a net.Conn: the plugin makes one request per
// process, and the runtime's network poller would cost it an epoll set, an
// eventfd and a hand-off between threads for every read (each one a wake-up
// of a sleeping thread, ~0.1 ms of CPU here). The thread simply blocks in
// the kernel, bounded by the socket timeouts set from ctx's deadline.
func (c *Client) dial(ctx context.Context) (*conn, error) {
	if c.trustedUID >= 0 {
		if err := checkSocketFile(c.socket, c.trustedUID); err != nil {
			return nil, err
		}
	}
	cn, err := dialUnix(ctx, c.socket)
	if err != nil {
		return nil, err
	}
	if c.trustedUID >= 0 {
		// The file check above can race with a rename; the peer credentials
		// of the connected socket cannot.
		if err := checkPeer(cn, c.socket, c.trustedUID); err != nil {
			cn.Close()
			return nil, err
		}
	}
	return cn, nil
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

func checkPeer(cn *conn, path string, uid int) error {
	cred, err := cn.peer()
	if err != nil {
		return fmt.Errorf("peer credentials of %s: %w", path, err)
	}
	if int(cred.Uid) != uid {
		return fmt.Errorf("%w: %s is served by uid %d (pid %d), want %d", ErrUntrustedSocket, path, cred.Uid, cred.Pid, uid)
	}
	return nil
}

// maxHeaderBytes caps the status line and headers of an answer.
const maxHeaderBytes = 64 << 10

// do sends one request and decodes a 2xx JSON answer into out (if non-nil).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encode %s request: %w", path, err)
		}
	}
	status, data, err := c.exchange(ctx, method, path, body)
	var tooLarge errAnswerTooLarge
	switch {
	case errors.As(err, &tooLarge):
		return fmt.Errorf("%s %s: %w", method, path, err)
	case err != nil:
		return fmt.Errorf("%w: %s %s via %s: %w", ErrUnreachable, method, path, c.socket, err)
	}
	switch {
	case status >= 500:
		return &serverError{method: method, path: path, status: status, msg: errorMessage(data)}
	case status < 200 || status > 299:
		return &APIError{Status: status, Message: errorMessage(data)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode %s answer: %w", path, err)
	}
	return nil
}

// errAnswerTooLarge is not an unreachable daemon: it answered, too much.
type errAnswerTooLarge struct{ limit int }

func (e errAnswerTooLarge) Error() string { return fmt.Sprintf("answer larger than %d bytes", e.limit) }

// exchange is one HTTP/1.1 request on a fresh connection (Connection:
// close), bounded by ctx's deadline, returning the status code and the body.
func (c *Client) exchange(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return 0, nil, ctxErr(ctx, err)
	}
	defer conn.Close()

	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: weftd\r\nUser-Agent: weft\r\nAccept: application/json\r\nConnection: close\r\n", method, path)
	if body != nil {
		fmt.Fprintf(&req, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	req.WriteString("\r\n")
	req.Write(body)
	if _, err := conn.Write(req.Bytes()); err != nil {
		return 0, nil, ctxErr(ctx, fmt.Errorf("send request: %w", err))
	}

	br := bufio.NewReader(io.LimitReader(conn, maxHeaderBytes+maxResponseBytes+64<<10))
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return 0, nil, ctxErr(ctx, fmt.Errorf("read status line: %w", err))
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if !strings.HasPrefix(proto, "HTTP/1.") || err != nil || status < 100 || status > 999 {
		return 0, nil, fmt.Errorf("malformed status line %q", truncate(line))
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return 0, nil, ctxErr(ctx, fmt.Errorf("read headers: %w", err))
	}
	var r io.Reader = br
	switch {
	case status == 204 || status == 304 || status < 200:
		// No body by definition (RFC 9112 §6.3): answer now instead of
		// waiting for the daemon to close the connection, one wakeup
		// (two context switches) less on every ADD and DEL.
		return status, nil, nil
	case strings.EqualFold(hdr.Get("Transfer-Encoding"), "chunked"):
		r = &chunkedReader{r: br}
	case hdr.Get("Content-Length") != "":
		n, err := strconv.ParseInt(hdr.Get("Content-Length"), 10, 64)
		if err != nil || n < 0 {
			return 0, nil, fmt.Errorf("malformed Content-Length %q", hdr.Get("Content-Length"))
		}
		if n > maxResponseBytes {
			return status, nil, errAnswerTooLarge{maxResponseBytes}
		}
		r = io.LimitReader(br, n)
	}
	data, err := io.ReadAll(io.LimitReader(r, maxResponseBytes+1))
	if err != nil {
		return 0, nil, ctxErr(ctx, fmt.Errorf("read answer: %w", err))
	}
	if len(data) > maxResponseBytes {
		return status, nil, errAnswerTooLarge{maxResponseBytes}
	}
	return status, data, nil
}

// ctxErr prefers the context's reason (deadline, cancel) over the I/O
// error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

func truncate(s string) string {
	if len(s) > 128 {
		return s[:128] + "…"
	}
	return s
}

// chunkedReader decodes an HTTP/1.1 chunked body (the daemon's server
// chooses chunking for answers it cannot size in advance).
type chunkedReader struct {
	r    *bufio.Reader
	left int64 // bytes left in the current chunk
	done bool
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	for c.left == 0 {
		if c.done {
			return 0, io.EOF
		}
		line, err := c.r.ReadString('\n')
		if err != nil {
			return 0, fmt.Errorf("read chunk size: %w", err)
		}
		size, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("malformed chunk size %q", truncate(line))
		}
		if n == 0 {
			c.done = true // trailers, if any, are not needed
			return 0, io.EOF
		}
		c.left = n
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left == 0 && err == nil {
		if _, err := c.r.Discard(2); err != nil { // the chunk's CRLF
			return n, fmt.Errorf("read chunk end: %w", err)
		}
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
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
	return c.do(ctx, "POST", api.PathAdd, ev, nil)
}

// Del reports the removal of a pod attachment.
func (c *Client) Del(ctx context.Context, ev api.Event) error {
	return c.do(ctx, "POST", api.PathDel, ev, nil)
}

// Check asks whether an attachment is known and the node ready.
func (c *Client) Check(ctx context.Context, req api.CheckRequest) (api.CheckResponse, error) {
	var resp api.CheckResponse
	err := c.do(ctx, "POST", api.PathCheck, req, &resp)
	return resp, err
}

// GC tells the daemon which attachments of a network are still valid.
func (c *Client) GC(ctx context.Context, req api.GCRequest) (api.GCResponse, error) {
	var resp api.GCResponse
	err := c.do(ctx, "POST", api.PathGC, req, &resp)
	return resp, err
}

// Status fetches the daemon's status document.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var st api.Status
	err := c.do(ctx, "GET", api.PathStatus, nil, &st)
	return st, err
}

// Ready reports the daemon's readiness (/readyz). A daemon that answers
// 503 is reachable and not ready: (false, nil).
func (c *Client) Ready(ctx context.Context) (bool, error) {
	err := c.do(ctx, "GET", api.PathReadyz, nil, nil)
	if err == nil {
		return true, nil
	}
	var se *serverError
	if errors.As(err, &se) && se.status == 503 {
		return false, nil
	}
	return false, err
}
