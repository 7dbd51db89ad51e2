package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// conn is a blocking unix stream socket bounded by a context: every
// connect, write and read waits at most until ctx's deadline (the socket
// timeouts are set from it before each call), and a cancelled ctx shuts the
// socket down, which wakes a blocked read or write at once.
type conn struct {
	ctx context.Context
	fd  int

	mu     sync.Mutex // orders Close against the cancel func's shutdown
	closed bool
	stop   func() bool
}

// dialUnix connects to the unix stream socket at path within ctx.
func dialUnix(ctx context.Context, path string) (*conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	c := &conn{ctx: ctx, fd: fd}
	c.stop = context.AfterFunc(ctx, c.shutdown)
	for {
		if err = c.setTimeout(syscall.SO_SNDTIMEO); err != nil {
			break
		}
		// A unix connect waits only while the listener's backlog is full,
		// and SO_SNDTIMEO bounds that wait.
		err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: path})
		if err != syscall.EINTR {
			break
		}
	}
	switch {
	case err == nil, errors.Is(err, syscall.EISCONN):
		return c, nil
	case errors.Is(err, syscall.EAGAIN):
		err = os.ErrDeadlineExceeded
	default:
		err = os.NewSyscallError("connect", err)
	}
	c.Close()
	return nil, &os.PathError{Op: "dial", Path: path, Err: err}
}

// setTimeout sets the socket timeout opt to what is left of ctx's
// deadline, or to none without one.
func (c *conn) setTimeout(opt int) error {
	var tv syscall.Timeval
	if dl, ok := c.ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		// Rounded up: the kernel's wait ends at the deadline or just
		// after, never before it.
		tv = syscall.NsecToTimeval((left + time.Microsecond - 1).Truncate(time.Microsecond).Nanoseconds())
	}
	if err := syscall.SetsockoptTimeval(c.fd, syscall.SOL_SOCKET, opt, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	return nil
}

// Read reads from the socket, waiting at most until ctx's deadline.
func (c *conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if err := c.setTimeout(syscall.SO_RCVTIMEO); err != nil {
			return 0, err
		}
		n, err := syscall.Read(c.fd, p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return 0, os.ErrDeadlineExceeded
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0:
			if e := c.ctx.Err(); e != nil {
				return 0, e // shut down by the cancel func
			}
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write writes all of p, waiting at most until ctx's deadline.
func (c *conn) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		if err := c.setTimeout(syscall.SO_SNDTIMEO); err != nil {
			return written, err
		}
		n, err := syscall.Write(c.fd, p[written:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return written, os.ErrDeadlineExceeded
		case err != nil:
			if e := c.ctx.Err(); e != nil {
				return written, e
			}
			return written, os.NewSyscallError("write", err)
		}
		written += n
	}
	return written, nil
}

// peer returns the credentials of the process serving the socket.
func (c *conn) peer() (*syscall.Ucred, error) {
	return syscall.GetsockoptUcred(c.fd, syscall.SOL_SOCKET, syscall.SO_PEERCRED)
}

// shutdown wakes whatever waits on the socket (ctx is done). It never
// touches a closed descriptor: its number may belong to another file by then.
func (c *conn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		_ = syscall.Shutdown(c.fd, syscall.SHUT_RDWR)
	}
}

// Close closes the socket.
func (c *conn) Close() error {
	c.stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if err := syscall.Close(c.fd); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}
