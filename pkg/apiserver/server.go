// Package apiserver serves weftd's HTTP+JSON API on a unix socket: the
// plugin's events, CHECK and GC, and the status document. Only peers whose
// uid is allowed (root by default, checked with SO_PEERCRED) are served.
package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/api"
)

// Handler is what the daemon does with each request.
type Handler interface {
	Add(ctx context.Context, ev api.Event) error
	Del(ctx context.Context, ev api.Event) error
	Check(ctx context.Context, req api.CheckRequest) api.CheckResponse
	GC(ctx context.Context, req api.GCRequest) (api.GCResponse, error)
	Status() api.Status
	Ready() (bool, string)
}

// Options configure the server.
type Options struct {
	Socket      string
	AllowedUIDs []uint32 // default: root only
	Log         *slog.Logger
	// Deadlines for one request; defaults are generous for a local socket
	// but bound a client that holds a connection open.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	IdleTimeout  time.Duration
}

// Server is the running API server.
type Server struct {
	opts Options
	h    Handler
	srv  *http.Server
	ln   net.Listener
}

type credKey struct{}

// Listen creates the socket (directory 0700, socket 0600; a stale socket
// left by a killed daemon is replaced) and returns a server ready to Serve.
func Listen(opts Options, h Handler) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if len(opts.AllowedUIDs) == 0 {
		opts.AllowedUIDs = []uint32{0}
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = 5 * time.Second
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 30 * time.Second
	}
	dir := filepath.Dir(opts.Socket)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create socket dir %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("chmod socket dir %s: %w", dir, err)
	}
	if fi, err := os.Lstat(opts.Socket); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("socket path %s exists and is not a socket", opts.Socket)
		}
		if err := os.Remove(opts.Socket); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", opts.Socket, err)
		}
	}
	// The umask makes the socket 0600 from birth: no window in which
	// another user could connect.
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", opts.Socket)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", opts.Socket, err)
	}
	s := &Server{opts: opts, h: h, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathAdd, s.event(api.VerbAdd))
	mux.HandleFunc("POST "+api.PathDel, s.event(api.VerbDel))
	mux.HandleFunc("POST "+api.PathCheck, s.check)
	mux.HandleFunc("POST "+api.PathGC, s.gc)
	mux.HandleFunc("GET "+api.PathStatus, s.status)
	mux.HandleFunc("GET "+api.PathHealthz, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET "+api.PathReadyz, s.readyz)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	s.srv = &http.Server{
		Handler:           s.authorize(mux),
		ReadHeaderTimeout: opts.ReadTimeout,
		ReadTimeout:       opts.ReadTimeout,
		WriteTimeout:      opts.WriteTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(opts.Log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, credKey{}, peerCred(c))
		},
	}
	return s, nil
}

// Serve serves until Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", s.opts.Socket, err)
	}
	return nil
}

// Shutdown stops accepting and waits for in-flight requests.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}

type cred struct {
	ok  bool
	uid uint32
	pid int32
}

func peerCred(c net.Conn) cred {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return cred{}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return cred{}
	}
	var cr cred
	_ = raw.Control(func(fd uintptr) {
		u, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err == nil {
			cr = cred{ok: true, uid: u.Uid, pid: u.Pid}
		}
	})
	return cr
}

func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cr, _ := r.Context().Value(credKey{}).(cred)
		if !cr.ok {
			writeErr(w, http.StatusForbidden, "peer credentials unavailable")
			return
		}
		allowed := false
		for _, u := range s.opts.AllowedUIDs {
			if u == cr.uid {
				allowed = true
			}
		}
		if !allowed {
			s.opts.Log.Warn("refused API request from unauthorised peer", "uid", cr.uid, "pid", cr.pid, "path", r.URL.Path)
			writeErr(w, http.StatusForbidden, fmt.Sprintf("uid %d may not use the weft API", cr.uid))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) event(verb string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var ev api.Event
		if !decode(w, r, &ev) {
			return
		}
		if ev.Verb == "" {
			ev.Verb = verb
		}
		if err := ValidateEvent(ev, verb); err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		var err error
		if verb == api.VerbAdd {
			err = s.h.Add(r.Context(), ev)
		} else {
			err = s.h.Del(r.Context(), ev)
		}
		if err != nil {
			s.opts.Log.Error("handle plugin event", "verb", verb, "containerID", ev.ContainerID, "err", err)
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// ValidateEvent checks an event for the fields the daemon relies on.
func ValidateEvent(ev api.Event, verb string) error {
	if ev.Verb != verb {
		return fmt.Errorf("verb: %q does not match the endpoint (%s)", ev.Verb, verb)
	}
	if ev.ContainerID == "" {
		return errors.New("containerID: required")
	}
	if ev.IfName == "" {
		return errors.New("ifName: required")
	}
	if len(ev.ContainerID) > 1024 || len(ev.IfName) > 64 {
		return errors.New("containerID/ifName: too long")
	}
	for i, ip := range ev.IPs {
		if ip.Address != "" {
			if _, _, err := net.ParseCIDR(ip.Address); err != nil {
				return fmt.Errorf("ips[%d].address: %q is not a CIDR", i, ip.Address)
			}
		}
		if ip.Gateway != "" && net.ParseIP(ip.Gateway) == nil {
			return fmt.Errorf("ips[%d].gateway: %q is not an IP", i, ip.Gateway)
		}
	}
	return nil
}

func (s *Server) check(w http.ResponseWriter, r *http.Request) {
	var req api.CheckRequest
	if !decode(w, r, &req) {
		return
	}
	if req.ContainerID == "" || req.IfName == "" {
		writeErr(w, http.StatusBadRequest, "containerID and ifName: required")
		return
	}
	writeJSON(w, http.StatusOK, s.h.Check(r.Context(), req))
}

func (s *Server) gc(w http.ResponseWriter, r *http.Request) {
	var req api.GCRequest
	if !decode(w, r, &req) {
		return
	}
	for i, k := range req.ValidAttachments {
		if k.ContainerID == "" || k.IfName == "" {
			writeErr(w, http.StatusBadRequest, fmt.Sprintf("validAttachments[%d]: containerID and ifName required", i))
			return
		}
	}
	resp, err := s.h.GC(r.Context(), req)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.h.Status())
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ready, reason := s.h.Ready()
	if !ready {
		http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

// decode reads one JSON object, capped at api.MaxBodyBytes, rejecting
// unknown fields' types and trailing garbage with a 400 that says why.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeErr(w, http.StatusUnsupportedMediaType, fmt.Sprintf("content type %q: want application/json", ct))
		return false
	}
	body := http.MaxBytesReader(w, r.Body, api.MaxBodyBytes)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeErr(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", api.MaxBodyBytes))
			return false
		}
		writeErr(w, http.StatusBadRequest, "invalid JSON: "+err.Error())
		return false
	}
	if dec.More() {
		writeErr(w, http.StatusBadRequest, "invalid JSON: trailing data after the object")
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}
