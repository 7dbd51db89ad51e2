package reliability

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/client"
)

// Daemon API budgets under abuse: a real request's p99 and weftd's peak RSS.
const (
	apiLatencyBudget = 250 * time.Millisecond
	apiRSSBudgetKiB  = 150 << 10
)

// unixHTTP is a plain HTTP client on the daemon's socket, with none of the
// checks of pkg/client, so the test can send what a hostile peer would.
func unixHTTP(sock string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// Promise 6: bad input on the daemon API. Every bad request gets its 4xx
// and records nothing; a non-root peer gets 403; slow and abandoned
// connections do not stop real requests from being served within budget;
// memory stays bounded.
func TestDaemonAPIAbuse(t *testing.T) {
	defer run.sum.TrackSkip(t, PAPI)() // its cases are subtests; a skip before them counts too
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 120*time.Second)
	n, cfg := oneNode(t, env, nodeSpec{})
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	hc := unixHTTP(w.Socket)
	cl := client.New(w.Socket, 2*time.Second)
	attachments := func() int {
		st, err := cl.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Attachments
	}

	big := `{"verb":"ADD","containerID":"big","ifName":"eth0","podName":"` + strings.Repeat("x", api.MaxBodyBytes) + `"}`
	cases := []struct {
		name, method, path, ctype, body string
		want                            int
	}{
		{"oversized body", "POST", api.PathAdd, "application/json", big, 413},
		{"invalid JSON", "POST", api.PathAdd, "application/json", `{"verb":"ADD",`, 400},
		{"not an object", "POST", api.PathAdd, "application/json", `["ADD"]`, 400},
		{"wrong type containerID", "POST", api.PathAdd, "application/json", `{"verb":"ADD","containerID":5,"ifName":"eth0"}`, 400},
		{"wrong type ips", "POST", api.PathAdd, "application/json", `{"verb":"ADD","containerID":"bad-ips","ifName":"eth0","ips":"10.1.1.5/24"}`, 400},
		{"invalid address", "POST", api.PathAdd, "application/json", `{"verb":"ADD","containerID":"bad-addr","ifName":"eth0","ips":[{"address":"10.1.1.500/24"}]}`, 400},
		{"missing ifName", "POST", api.PathAdd, "application/json", `{"verb":"ADD","containerID":"no-if"}`, 400},
		{"verb mismatch", "POST", api.PathAdd, "application/json", `{"verb":"DEL","containerID":"mismatch","ifName":"eth0"}`, 400},
		{"trailing data", "POST", api.PathAdd, "application/json", `{"verb":"ADD","containerID":"trail","ifName":"eth0"} {}`, 400},
		{"wrong content type", "POST", api.PathAdd, "text/plain", `{"verb":"ADD","containerID":"ctype","ifName":"eth0"}`, 415},
		{"unknown path", "POST", "/v1/cni/frobnicate", "application/json", `{}`, 404},
		{"unknown version", "GET", "/v2/status", "", ``, 404},
		{"wrong method", "GET", api.PathAdd, "", ``, 404}, // the server knows endpoints by method and path
		{"gc with empty key", "POST", api.PathGC, "application/json", `{"network":"cbr0","validAttachments":[{"containerID":""}]}`, 400},
		{"check wrong types", "POST", api.PathCheck, "application/json", `{"containerID":["a"]}`, 400},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			defer run.sum.Track(t, PAPI)()
			before := attachments()
			req, _ := http.NewRequestWithContext(ctx, c.method, "http://weft"+c.path, strings.NewReader(c.body))
			if c.ctype != "" {
				req.Header.Set("Content-Type", c.ctype)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, c.want)
			}
			if !bytes.Contains(body, []byte(`"error"`)) {
				t.Errorf("body %q carries no error reason", body)
			}
			if after := attachments(); after != before {
				t.Fatalf("attachments %d -> %d: a bad request was recorded", before, after)
			}
		})
	}

	t.Run("non-root_peer", func(t *testing.T) {
		defer run.sum.Track(t, PAPI)()
		nonRootPeer(t, ctx, w, cl)
	})

	t.Run("slow_client_and_abandoned_connections", func(t *testing.T) {
		defer run.sum.Track(t, PAPI)()
		// A slow client: half a request, then nothing. The server must
		// drop it by its read deadline.
		slow, err := net.Dial("unix", w.Socket)
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close()
		fmt.Fprintf(slow, "POST %s HTTP/1.1\r\nHost: weft\r\nContent-Length: 100\r\n", api.PathAdd)
		slowStart := time.Now()
		slowClosed := make(chan time.Duration, 1)
		go func() {
			_, _ = io.Copy(io.Discard, bufio.NewReader(slow))
			slowClosed <- time.Since(slowStart)
		}()

		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := 0; i < run.size.AbandonedConns; i++ {
			c, err := net.Dial("unix", w.Socket)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			if i%2 == 0 { // half say something, then go quiet
				fmt.Fprintf(c, "GET %s HTTP/1.1\r\n", api.PathStatus)
			}
			conns = append(conns, c)
		}
		before := attachments()
		var lat []time.Duration
		for i := 0; i < 50; i++ {
			t0 := time.Now()
			err := cl.Add(ctx, api.Event{Verb: api.VerbAdd, ContainerID: fmt.Sprintf("real-%d", i), IfName: "eth0", Network: "cbr0", Time: time.Now()})
			lat = append(lat, time.Since(t0))
			if err != nil {
				t.Fatalf("real ADD %d under abuse: %v", i, err)
			}
		}
		if got := attachments(); got != before+50 {
			t.Fatalf("attachments %d, want %d", got, before+50)
		}
		p99 := Percentile(lat, 99)
		if p99 > apiLatencyBudget {
			t.Errorf("real ADD p99 %v under abuse, budget %v", p99, apiLatencyBudget)
		}
		// Abandoned: closed without a word, as a crashed client would.
		for _, c := range conns[:len(conns)/2] {
			c.Close()
		}
		select {
		case d := <-slowClosed:
			if d > 8*time.Second {
				t.Errorf("slow client held its connection %v", d)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("slow client still connected after 10 s: no read deadline")
		}
		hwm, err := vmKiB(w.PID, "VmHWM")
		if err != nil {
			t.Fatal(err)
		}
		rss, _ := vmKiB(w.PID, "VmRSS")
		if hwm > apiRSSBudgetKiB {
			t.Errorf("weftd peak RSS %d KiB, budget %d KiB", hwm, apiRSSBudgetKiB)
		}
		if _, err := cl.Status(ctx); err != nil {
			t.Fatalf("status after abuse: %v", err)
		}
		t.Logf("%d connections held: real ADD p50 %s p99 %s; weftd peak RSS %.1f MiB, now %.1f MiB", len(conns), Ms(Percentile(lat, 50)), Ms(p99), float64(hwm)/1024, float64(rss)/1024)
		run.sum.Figure(PAPI, "%d conns abandoned: ADD p99 %s, peak RSS %.1f MiB", len(conns), Ms(p99), float64(hwm)/1024)
	})
}

// nonRootPeer opens the socket to everyone for a moment (the directory is
// 0700 and the socket 0600, so a non-root process cannot even connect: that
// is checked first) and has uid 65534 post an ADD: the daemon must refuse
// it with 403 and record nothing.
func nonRootPeer(t *testing.T, ctx context.Context, w *harness.Weftd, cl *client.Client) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not installed")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	asNobody := func() (string, error) {
		cmd := exec.CommandContext(ctx, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
			"curl", "-sS", "-m", "5", "--unix-socket", w.Socket, "-H", "Content-Type: application/json",
			"-d", `{"verb":"ADD","containerID":"intruder","ifName":"eth0"}`, "-w", "\n%{http_code}", "http://weft"+api.PathAdd)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	before, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := asNobody(); err == nil {
		t.Fatalf("uid 65534 reached the socket through its 0700 directory: %s", out)
	}
	// Open every directory on the way and the socket itself, then restore.
	var restore []func()
	defer func() {
		for i := len(restore) - 1; i >= 0; i-- {
			restore[i]()
		}
	}()
	for _, p := range []string{filepath.Dir(filepath.Dir(w.Socket)), filepath.Dir(w.Socket), w.Socket} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		mode := st.Mode().Perm()
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
		restore = append(restore, func() { _ = os.Chmod(p, mode) })
	}
	out, err := asNobody()
	if err != nil {
		t.Fatalf("uid 65534 could not talk to the opened socket: %v: %s", err, out)
	}
	if !strings.HasSuffix(strings.TrimSpace(out), "403") || !strings.Contains(out, "uid 65534") {
		t.Fatalf("non-root peer got %q, want 403 naming the uid", out)
	}
	after, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, err := cl.Check(ctx, api.CheckRequest{ContainerID: "intruder", IfName: "eth0"})
	if err != nil || r.Known || after.Attachments != before.Attachments {
		t.Fatalf("non-root ADD was recorded: known=%v attachments %d -> %d (%v)", r.Known, before.Attachments, after.Attachments, err)
	}
	if !strings.Contains(w.LogTail(8192), "unauthorised peer") {
		t.Error("the refusal is not logged")
	}
}
