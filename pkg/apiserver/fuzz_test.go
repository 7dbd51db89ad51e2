package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"

	"github.com/weft-net/weft/pkg/api"
)

// recorder is a Handler that keeps what reached it, so the fuzz target can
// check that only validated requests get past decoding.
type recorder struct {
	mu     sync.Mutex
	events []api.Event
	checks []api.CheckRequest
	gcs    []api.GCRequest
}

func (r *recorder) Add(_ context.Context, ev api.Event) error { return r.keep(ev) }
func (r *recorder) Del(_ context.Context, ev api.Event) error { return r.keep(ev) }
func (r *recorder) keep(ev api.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	return nil
}
func (r *recorder) Check(_ context.Context, req api.CheckRequest) api.CheckResponse {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks = append(r.checks, req)
	return api.CheckResponse{Known: true, Ready: true}
}
func (r *recorder) GC(_ context.Context, req api.GCRequest) (api.GCResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gcs = append(r.gcs, req)
	return api.GCResponse{}, nil
}
func (r *recorder) Status() api.Status    { return api.Status{Node: "n"} }
func (r *recorder) Ready() (bool, string) { return true, "" }

// FuzzDecodeEvent feeds arbitrary bodies to every POST endpoint through the
// server's real handler chain (as an authorised root peer) and checks that
// the daemon never panics, answers every bad body with a 4xx carrying a JSON
// reason, and hands the agent only requests that pass validation.
func FuzzDecodeEvent(f *testing.F) {
	seeds := []struct {
		path byte
		body string
	}{
		{0, `{"verb":"ADD","containerID":"c1","ifName":"eth0","ips":[{"address":"10.1.2.5/24","gateway":"10.1.2.1"}],"time":"2026-01-02T03:04:05Z"}`},
		{1, `{"verb":"DEL","containerID":"c1","ifName":"eth0"}`},
		{0, `{"containerID":"c1","ifName":"eth0"}`},
		{0, `{"verb":"DEL","containerID":"c1","ifName":"eth0"}`},
		{0, `{"containerID":5}`},
		{0, `{"verb":"ADD","containerID":"c1","ifName":"eth0","ips":[{"address":"10.1.2.300/24"}]}`},
		{0, `{"verb":"ADD","containerID":"c1","ifName":"eth0"} trailing`},
		{0, `{"verb":"ADD","containerID":"c1","ifName":"eth0","time":"yesterday"}`},
		{2, `{"containerID":"c1","ifName":"eth0"}`},
		{2, `{"containerID":""}`},
		{3, `{"network":"n","validAttachments":[{"containerID":"c1","ifName":"eth0"}]}`},
		{3, `{"network":"n","validAttachments":[{"containerID":""}]}`},
		{3, `{"validAttachments":null}`},
		{0, ``},
		{0, `null`},
		{0, `[]`},
		{1, `{"verb":"DEL","containerID":"c1","ifName":"eth0","unknownKey":{"nested":[1,2,3]}}`},
	}
	for _, s := range seeds {
		f.Add(s.path, []byte(s.body))
	}
	paths := []string{api.PathAdd, api.PathDel, api.PathCheck, api.PathGC}
	rec := &recorder{}
	srv, err := Listen(Options{Socket: filepath.Join(f.TempDir(), "weft.sock"), Log: slog.New(slog.DiscardHandler)}, rec)
	if err != nil {
		f.Fatal(err)
	}
	defer srv.ln.Close()
	root := context.WithValue(context.Background(), credKey{}, cred{ok: true, uid: 0, pid: 1})

	f.Fuzz(func(t *testing.T, which byte, body []byte) {
		path := paths[int(which)%len(paths)]
		rec.mu.Lock()
		nEvents, nChecks, nGCs := len(rec.events), len(rec.checks), len(rec.gcs)
		rec.mu.Unlock()

		req := httptest.NewRequestWithContext(root, http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		srv.srv.Handler.ServeHTTP(w, req)
		resp := w.Result()
		out, _ := io.ReadAll(resp.Body)

		rec.mu.Lock()
		defer rec.mu.Unlock()
		reached := len(rec.events) > nEvents || len(rec.checks) > nChecks || len(rec.gcs) > nGCs
		switch resp.StatusCode {
		case http.StatusNoContent, http.StatusOK:
			if !reached {
				t.Fatalf("%s answered %d without reaching the handler", path, resp.StatusCode)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			if reached {
				t.Fatalf("%s answered %d but the handler saw the request", path, resp.StatusCode)
			}
			var e api.Error
			if err := json.Unmarshal(out, &e); err != nil || e.Error == "" {
				t.Fatalf("%s %d: body %q is not an api.Error with a reason", path, resp.StatusCode, out)
			}
			return
		default:
			t.Fatalf("%s: unexpected status %d (%s)", path, resp.StatusCode, out)
		}
		// What reached the agent must be valid, and stay valid through a
		// round trip (the spool stores events as JSON too).
		switch path {
		case api.PathAdd, api.PathDel:
			ev := rec.events[len(rec.events)-1]
			verb := api.VerbAdd
			if path == api.PathDel {
				verb = api.VerbDel
			}
			if err := ValidateEvent(ev, verb); err != nil {
				t.Fatalf("invalid event reached the agent: %v (%+v)", err, ev)
			}
			b, err := json.Marshal(ev)
			if err != nil {
				t.Fatalf("re-encode accepted event: %v", err)
			}
			var again api.Event
			if err := json.Unmarshal(b, &again); err != nil {
				t.Fatalf("accepted event does not decode after re-encoding: %v (%s)", err, b)
			}
			if err := ValidateEvent(again, verb); err != nil {
				t.Fatalf("accepted event invalid after a round trip: %v", err)
			}
		case api.PathCheck:
			c := rec.checks[len(rec.checks)-1]
			if c.ContainerID == "" || c.IfName == "" {
				t.Fatalf("check without a key reached the agent: %+v", c)
			}
		case api.PathGC:
			for i, k := range rec.gcs[len(rec.gcs)-1].ValidAttachments {
				if k.ContainerID == "" || k.IfName == "" {
					t.Fatalf("gc with an empty validAttachments[%d] reached the agent", i)
				}
			}
		}
		// Keep memory flat over millions of executions.
		rec.events, rec.checks, rec.gcs = rec.events[:0], rec.checks[:0], rec.gcs[:0]
	})
}
