// Package clienttest runs a stand-in for weftd's socket API in tests: a real
// HTTP server on a real unix socket that validates and records what it is
// sent and answers what the test tells it to. It speaks the wire, so the
// plugin and the client are tested over the same bytes the daemon sees.
package clienttest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

// Request is one request the daemon received.
type Request struct {
	Method string
	Path   string
	Body   []byte
}

// Reply is how the daemon answers a path. A zero Status means 200.
// Body is encoded as JSON unless it is a []byte or string.
type Reply struct {
	Status int
	Body   any
	// Delay holds the answer back (until the client gives up or the
	// daemon is closed), to exercise timeouts.
	Delay time.Duration
}

// Daemon is a fake weftd API on a unix socket.
type Daemon struct {
	// Socket is the path of the listening socket.
	Socket string

	srv     *http.Server
	done    chan struct{}
	closeMu sync.Once

	mu      sync.Mutex
	reqs    []Request
	replies map[string]Reply
}

// Start listens on a fresh socket in a short private temp dir (t.TempDir
// paths of subtests can exceed the 108-byte sun_path limit) and stops the
// daemon when the test ends.
func Start(t testing.TB) *Daemon {
	t.Helper()
	dir := TempDir(t)
	d := &Daemon{
		Socket:  filepath.Join(dir, "weft.sock"),
		done:    make(chan struct{}),
		replies: defaultReplies(),
	}
	ln, err := net.Listen("unix", d.Socket)
	if err != nil {
		t.Fatalf("listen %s: %v", d.Socket, err)
	}
	d.srv = &http.Server{Handler: http.HandlerFunc(d.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = d.srv.Serve(ln) }()
	t.Cleanup(d.Close)
	return d
}

// TempDir returns a short directory removed when the test ends.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "weft-ct-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func defaultReplies() map[string]Reply {
	return map[string]Reply{
		api.PathAdd:     {Body: struct{}{}},
		api.PathDel:     {Body: struct{}{}},
		api.PathCheck:   {Body: api.CheckResponse{Known: true, Ready: true}},
		api.PathGC:      {Body: api.GCResponse{}},
		api.PathStatus:  {Body: api.Status{Node: "fake", Cluster: "c1", Role: "non-gateway", Ready: true}},
		api.PathHealthz: {Body: "ok"},
		api.PathReadyz:  {Body: "ok"},
	}
}

// Close stops the daemon; the socket disappears. Safe to call twice.
func (d *Daemon) Close() {
	d.closeMu.Do(func() {
		close(d.done)
		_ = d.srv.Close()
		_ = os.Remove(d.Socket)
	})
}

// SetReply changes how path is answered.
func (d *Daemon) SetReply(path string, r Reply) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.replies[path] = r
}

// Requests returns what the daemon received so far, in order.
func (d *Daemon) Requests() []Request {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Request(nil), d.reqs...)
}

// Events decodes the bodies of the requests received on path as events.
func (d *Daemon) Events(t testing.TB, path string) []api.Event {
	t.Helper()
	var evs []api.Event
	for _, r := range d.Requests() {
		if r.Path != path {
			continue
		}
		var ev api.Event
		if err := json.Unmarshal(r.Body, &ev); err != nil {
			t.Fatalf("request to %s: %v", path, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// requestTypes says which body each POST path takes; the fake refuses
// unknown fields so that a drift of the wire types shows up in tests.
var requestTypes = map[string]func() any{
	api.PathAdd:   func() any { return new(api.Event) },
	api.PathDel:   func() any { return new(api.Event) },
	api.PathCheck: func() any { return new(api.CheckRequest) },
	api.PathGC:    func() any { return new(api.GCRequest) },
}

func (d *Daemon) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBodyBytes))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, api.Error{Error: err.Error()})
		return
	}
	d.mu.Lock()
	d.reqs = append(d.reqs, Request{Method: r.Method, Path: r.URL.Path, Body: body})
	reply, known := d.replies[r.URL.Path]
	d.mu.Unlock()

	if !known {
		writeJSON(w, http.StatusNotFound, api.Error{Error: "no such path " + r.URL.Path})
		return
	}
	if newBody, ok := requestTypes[r.URL.Path]; ok {
		if r.Method != http.MethodPost {
			writeJSON(w, http.StatusMethodNotAllowed, api.Error{Error: "POST only"})
			return
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(newBody()); err != nil {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "bad JSON: " + err.Error()})
			return
		}
	}
	if reply.Delay > 0 {
		select {
		case <-time.After(reply.Delay):
		case <-r.Context().Done():
			return
		case <-d.done:
			return
		}
	}
	status := reply.Status
	if status == 0 {
		status = http.StatusOK
	}
	writeJSON(w, status, reply.Body)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	var data []byte
	switch b := body.(type) {
	case []byte:
		data = b
	case string:
		data = []byte(b)
	default:
		var err error
		if data, err = json.Marshal(body); err != nil {
			data = []byte(errors.Join(errors.New("encode reply"), err).Error())
		}
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = w.Write(data)
}
