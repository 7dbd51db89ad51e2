package client

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/client/clienttest"
)

func TestRoundTrips(t *testing.T) {
	d := clienttest.Start(t)
	c := New(d.Socket, 2*time.Second)
	ctx := context.Background()
	ev := api.Event{Verb: api.VerbAdd, ContainerID: "abc", IfName: "eth0", Netns: "/run/netns/x",
		PodNamespace: "ns", PodName: "p", Network: "k8s", HostInterfaces: []string{"cni0"},
		IPs: []api.PodIP{{Address: "10.1.2.5/24", Gateway: "10.1.2.1"}}, Time: time.Unix(1700000000, 0).UTC()}
	if err := c.Add(ctx, ev); err != nil {
		t.Fatalf("Add: %v", err)
	}
	ev.Verb = api.VerbDel
	if err := c.Del(ctx, ev); err != nil {
		t.Fatalf("Del: %v", err)
	}
	d.SetReply(api.PathCheck, clienttest.Reply{Body: api.CheckResponse{Known: true, Ready: false, Reason: "no CNI interface"}})
	cr, err := c.Check(ctx, api.CheckRequest{ContainerID: "abc", IfName: "eth0"})
	if err != nil || !cr.Known || cr.Ready || cr.Reason != "no CNI interface" {
		t.Errorf("Check = %+v, %v", cr, err)
	}
	d.SetReply(api.PathGC, clienttest.Reply{Body: api.GCResponse{Removed: 3}})
	gr, err := c.GC(ctx, api.GCRequest{Network: "k8s", ValidAttachments: []api.AttachmentKey{{ContainerID: "abc", IfName: "eth0"}}})
	if err != nil || gr.Removed != 3 {
		t.Errorf("GC = %+v, %v", gr, err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Node != "fake" || !st.Ready {
		t.Errorf("Status = %+v, %v", st, err)
	}
	ready, err := c.Ready(ctx)
	if err != nil || !ready {
		t.Errorf("Ready = %v, %v", ready, err)
	}

	reqs := d.Requests()
	wantPaths := []string{"POST " + api.PathAdd, "POST " + api.PathDel, "POST " + api.PathCheck, "POST " + api.PathGC, "GET " + api.PathStatus, "GET " + api.PathReadyz}
	if len(reqs) != len(wantPaths) {
		t.Fatalf("daemon got %d requests, want %d", len(reqs), len(wantPaths))
	}
	for i, r := range reqs {
		if got := r.Method + " " + r.Path; got != wantPaths[i] {
			t.Errorf("request %d = %s, want %s", i, got, wantPaths[i])
		}
	}
	adds := d.Events(t, api.PathAdd)
	if len(adds) != 1 || adds[0].PodName != "p" || adds[0].IPs[0].Gateway != "10.1.2.1" || !adds[0].Time.Equal(ev.Time) {
		t.Errorf("daemon decoded ADD %+v", adds)
	}
}

func TestErrorClasses(t *testing.T) {
	tests := []struct {
		name            string
		reply           clienttest.Reply
		wantUnreachable bool
		wantAPIStatus   int
		wantMsg         string
	}{
		{"ok", clienttest.Reply{Body: struct{}{}}, false, 0, ""},
		{"bad request", clienttest.Reply{Status: 400, Body: api.Error{Error: "containerID is empty"}}, false, 400, "containerID is empty"},
		{"forbidden", clienttest.Reply{Status: 403, Body: api.Error{Error: "uid 1000 not allowed"}}, false, 403, "uid 1000 not allowed"},
		{"not ours", clienttest.Reply{Status: 404, Body: "404 page not found"}, false, 404, "404 page not found"},
		{"internal", clienttest.Reply{Status: 500, Body: api.Error{Error: "boom"}}, true, 0, "boom"},
		{"unavailable", clienttest.Reply{Status: 503, Body: ""}, true, 0, ""},
		{"slow", clienttest.Reply{Delay: time.Minute, Body: struct{}{}}, true, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := clienttest.Start(t)
			d.SetReply(api.PathAdd, tc.reply)
			c := New(d.Socket, 300*time.Millisecond)
			start := time.Now()
			err := c.Add(context.Background(), api.Event{Verb: api.VerbAdd, ContainerID: "c", IfName: "eth0"})
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("Add took %v with a 300ms timeout", elapsed)
			}
			if got := errors.Is(err, ErrUnreachable); got != tc.wantUnreachable {
				t.Errorf("errors.Is(%v, ErrUnreachable) = %v, want %v", err, got, tc.wantUnreachable)
			}
			var ae *APIError
			switch {
			case tc.wantAPIStatus == 0 && errors.As(err, &ae):
				t.Errorf("got APIError %v, want none", ae)
			case tc.wantAPIStatus != 0 && (!errors.As(err, &ae) || ae.Status != tc.wantAPIStatus):
				t.Errorf("err = %v, want APIError %d", err, tc.wantAPIStatus)
			}
			if tc.wantMsg != "" && (err == nil || !strings.Contains(err.Error(), tc.wantMsg)) {
				t.Errorf("err = %v, want it to contain %q", err, tc.wantMsg)
			}
			if tc.name == "ok" && err != nil {
				t.Errorf("err = %v", err)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	dir := clienttest.TempDir(t)
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // socket file stays, nobody listens: ECONNREFUSED

	for name, path := range map[string]string{
		"missing": filepath.Join(dir, "nope.sock"),
		"refused": stale,
	} {
		t.Run(name, func(t *testing.T) {
			c := New(path, time.Second)
			if err := c.Del(context.Background(), api.Event{Verb: api.VerbDel, ContainerID: "c"}); !errors.Is(err, ErrUnreachable) {
				t.Errorf("Del = %v, want ErrUnreachable", err)
			}
			if _, err := c.Status(context.Background()); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), path) {
				t.Errorf("Status = %v, want ErrUnreachable naming %s", err, path)
			}
		})
	}
}

func TestReady(t *testing.T) {
	tests := []struct {
		reply     clienttest.Reply
		wantReady bool
		wantErr   bool
	}{
		{clienttest.Reply{Body: "ok"}, true, false},
		{clienttest.Reply{Status: 503, Body: "not ready: no CNI interface"}, false, false},
		{clienttest.Reply{Status: 500, Body: "boom"}, false, true},
	}
	for _, tc := range tests {
		d := clienttest.Start(t)
		d.SetReply(api.PathReadyz, tc.reply)
		ready, err := New(d.Socket, time.Second).Ready(context.Background())
		if ready != tc.wantReady || (err != nil) != tc.wantErr {
			t.Errorf("reply %d: Ready = %v, %v; want %v, err %v", tc.reply.Status, ready, err, tc.wantReady, tc.wantErr)
		}
	}
}

func TestAnswerCap(t *testing.T) {
	d := clienttest.Start(t)
	d.SetReply(api.PathStatus, clienttest.Reply{Body: []byte(`{"node":"` + strings.Repeat("x", 2<<20) + `"}`)})
	_, err := New(d.Socket, 2*time.Second).Status(context.Background())
	if err == nil || errors.Is(err, ErrUnreachable) {
		t.Errorf("Status with a 2 MiB answer = %v, want a non-unreachable error", err)
	}
}

func TestRefusesUntrustedSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("socket ownership checks only apply when running as root")
	}
	dir := clienttest.TempDir(t)
	regular := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d := clienttest.Start(t)
	foreign := clienttest.Start(t)
	if err := os.Chown(foreign.Socket, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(d.Socket, link); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"regular file": regular, "owned by 1000": foreign.Socket, "symlink": link} {
		t.Run(name, func(t *testing.T) {
			err := New(path, time.Second).Add(context.Background(), api.Event{Verb: api.VerbAdd, ContainerID: "c"})
			if !errors.Is(err, ErrUntrustedSocket) || !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), path) {
				t.Errorf("Add = %v, want ErrUntrustedSocket+ErrUnreachable naming %s", err, path)
			}
		})
	}
	if n := len(foreign.Requests()); n != 0 {
		t.Errorf("untrusted daemon received %d requests", n)
	}
	// The root-owned socket itself is fine.
	if err := New(d.Socket, time.Second).Add(context.Background(), api.Event{Verb: api.VerbAdd, ContainerID: "c", IfName: "eth0"}); err != nil {
		t.Errorf("Add to root's socket: %v", err)
	}
}

func TestPeerCredentialCheck(t *testing.T) {
	d := clienttest.Start(t)
	conn, err := dialUnix(context.Background(), d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := checkPeer(conn, d.Socket, os.Geteuid()); err != nil {
		t.Errorf("checkPeer(own uid) = %v", err)
	}
	if err := checkPeer(conn, d.Socket, os.Geteuid()+4242); !errors.Is(err, ErrUntrustedSocket) {
		t.Errorf("checkPeer(other uid) = %v, want ErrUntrustedSocket", err)
	}
}

// rawServer answers every connection on a unix socket with reply, after
// reading the request head.
func rawServer(t *testing.T, reply string) string {
	return holdingServer(t, reply, 0)
}

// holdingServer is rawServer keeping each connection open for hold after
// the reply.
func holdingServer(t *testing.T, reply string, hold time.Duration) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "raw.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil || l == "\r\n" {
						break
					}
				}
				io.WriteString(c, reply)
				time.Sleep(hold)
			}()
		}
	}()
	return sock
}

// A 204 (the answer to every ADD and DEL) has no body: the client returns
// once it has the head, without waiting for the server to close.
func TestNoContentDoesNotWaitForClose(t *testing.T) {
	c := newClient(holdingServer(t, "HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n", 10*time.Second), 2*time.Second, -1)
	t0 := time.Now()
	if err := c.Add(context.Background(), api.Event{Verb: api.VerbAdd, ContainerID: "c", IfName: "eth0"}); err != nil {
		t.Fatalf("ADD answered 204 by a server that keeps the connection open: %v", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("ADD took %v: it waited for the connection to close", d)
	}
}

// The client speaks HTTP/1.1 itself (no net/http in the plugin): the
// framings a server may choose decode, and broken answers are errors.
func TestAnswerFraming(t *testing.T) {
	body := `{"node":"c1-n2","ready":true}`
	cases := []struct {
		name      string
		reply     string
		wantNode  string
		wantErr   error
		wantAnErr bool
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body, "c1-n2", nil, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n" + body[:5] + "\r\n" + strconv.FormatInt(int64(len(body)-5), 16) + ";ext=1\r\n" + body[5:] + "\r\n0\r\n\r\n", "c1-n2", nil, false},
		{"until close", "HTTP/1.1 200 OK\r\n\r\n" + body, "c1-n2", nil, false},
		{"malformed status line", "SMTP ready\r\n\r\n", "", ErrUnreachable, false},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "", ErrUnreachable, false},
		{"truncated chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{\"node\"", "", ErrUnreachable, false},
		{"oversized content-length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", "", nil, true},
		{"server error", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 20\r\n\r\n{\"error\":\"starting\"}", "", ErrUnreachable, false},
		{"rejected", "HTTP/1.1 400 Bad Request\r\nContent-Length: 15\r\n\r\n{\"error\":\"bad\"}", "", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(rawServer(t, tc.reply), 2*time.Second, -1)
			st, err := c.Status(context.Background())
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			case tc.wantAnErr:
				if err == nil || errors.Is(err, ErrUnreachable) {
					t.Fatalf("err = %v, want an error that is not 'unreachable'", err)
				}
			default:
				if err != nil || st.Node != tc.wantNode || !st.Ready {
					t.Fatalf("status = %+v, %v", st, err)
				}
			}
		})
	}
}

// The connection is a blocking socket: a daemon that accepts and never
// answers, one whose backlog is full and never accepts, and a caller that
// gives up, all end the request within its bound, as unreachable.
func TestBlockingSocketBounds(t *testing.T) {
	silent := func(t *testing.T) string { return holdingServer(t, "", 0) } // reads the head, answers nothing, closes
	mute := func(t *testing.T) string {
		sock := filepath.Join(t.TempDir(), "mute.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		var mu sync.Mutex
		var held []net.Conn
		t.Cleanup(func() {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range held {
				c.Close()
			}
		})
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				held = append(held, c) // kept open, never read nor answered
				mu.Unlock()
			}
		}()
		return sock
	}
	full := func(t *testing.T) string {
		// A listener that never accepts: once its backlog is full, a
		// connect blocks in the kernel.
		sock := filepath.Join(t.TempDir(), "full.sock")
		fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Close(fd) })
		if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: sock}); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Listen(fd, 0); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 4; i++ { // fill the backlog
			if c, err := dialUnix(ctxTimeout(t, 50*time.Millisecond), sock); err == nil {
				t.Cleanup(func() { c.Close() })
			}
		}
		return sock
	}
	cases := []struct {
		name    string
		server  func(*testing.T) string
		timeout time.Duration
		cancel  time.Duration // cancel the caller's ctx after this; 0: never
	}{
		{"answer ends without a status line", silent, 2 * time.Second, 0},
		{"daemon never answers", mute, 300 * time.Millisecond, 0},
		{"backlog full", full, 300 * time.Millisecond, 0},
		{"caller cancels while waiting", mute, 10 * time.Second, 100 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(tc.server(t), tc.timeout, -1)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel > 0 {
				time.AfterFunc(tc.cancel, cancel)
			}
			bound := tc.timeout
			if tc.cancel > 0 {
				bound = tc.cancel
			}
			t0 := time.Now()
			err := c.Add(ctx, api.Event{Verb: api.VerbAdd, ContainerID: "c", IfName: "eth0"})
			d := time.Since(t0)
			if !errors.Is(err, ErrUnreachable) {
				t.Fatalf("Add = %v, want ErrUnreachable", err)
			}
			if d > bound+500*time.Millisecond {
				t.Fatalf("Add returned after %v, bound %v", d, bound)
			}
			if tc.cancel > 0 && !errors.Is(err, context.Canceled) {
				t.Errorf("Add = %v, want it to say the caller cancelled", err)
			}
		})
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
