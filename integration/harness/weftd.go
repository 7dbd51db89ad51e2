package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/weft-net/weft/pkg/api"
)

// DefaultDaemonSocket is weftd's socket when the configuration names none.
const DefaultDaemonSocket = "/run/weft/weft.sock"

// Weftd is one weftd process started by the harness in a node namespace.
type Weftd struct {
	Node       *Node
	PID        int
	Config     []byte // as passed to StartWeftd; restart with Node.StartWeftd(ctx, w.Config)
	ConfigPath string
	LogPath    string
	Socket     string

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// StartWeftd writes configYAML to Node.WeftdConfigPath() and starts
// `ip netns exec NODE bin/weftd run --config FILE` (ip execs weftd in place,
// so PID is weftd's own), stdout and stderr appended to Node.WeftdLogPath().
// It returns once the API socket exists; if weftd exits first, the error
// holds the log tail. Without a deadline on ctx it waits up to 10 s. The
// process is stopped at Env.Close if still running.
func (n *Node) StartWeftd(ctx context.Context, configYAML []byte) (*Weftd, error) {
	return n.StartWeftdWith(ctx, WeftdStart{Config: configYAML})
}

// WeftdStart shapes StartWeftdWith.
type WeftdStart struct {
	// Config is written to Node.WeftdConfigPath(), unless NoFile: then
	// that file is removed and weftd starts without one.
	Config []byte
	NoFile bool
	// Args are appended to `weftd run --config FILE` (e.g. --socket).
	// A --socket here is the socket waited for when the config names none.
	Args []string
}

// StartWeftdWith is StartWeftd with extra flags, or without a config file.
func (n *Node) StartWeftdWith(ctx context.Context, o WeftdStart) (*Weftd, error) {
	configYAML := o.Config
	if !n.env.HasBin("weftd") {
		return nil, fmt.Errorf("node %s: %s not built (make build)", n.Name, n.env.Bin("weftd"))
	}
	var sock struct {
		Socket string `json:"socket"`
	}
	if err := yaml.Unmarshal(configYAML, &sock); err != nil {
		// weftd itself must refuse it; the harness only needs the socket.
		sock.Socket = ""
	}
	flagSocket := ""
	for i, a := range o.Args {
		if a == "--socket" && i+1 < len(o.Args) {
			flagSocket = o.Args[i+1]
		}
	}
	w := &Weftd{
		Node:       n,
		Config:     append([]byte(nil), configYAML...),
		ConfigPath: n.WeftdConfigPath(),
		LogPath:    n.WeftdLogPath(),
		Socket:     cmpOr(sock.Socket, cmpOr(flagSocket, DefaultDaemonSocket)),
		done:       make(chan struct{}),
	}
	if o.NoFile {
		if err := os.Remove(w.ConfigPath); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("node %s: remove weftd config: %w", n.Name, err)
		}
	} else if err := os.WriteFile(w.ConfigPath, configYAML, 0o644); err != nil {
		return nil, fmt.Errorf("node %s: write weftd config: %w", n.Name, err)
	}
	logf, err := os.OpenFile(w.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("node %s: open weftd log: %w", n.Name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	fmt.Fprintf(logf, "=== harness: weftd start %s ===\n", time.Now().Format(time.RFC3339Nano))

	// A socket left by a killed predecessor must not pass for readiness.
	// Comparing inodes is not enough (tmpfs reuses a freed inode number at
	// once), so the stale file is removed: weftd would replace it anyway.
	if err := os.Remove(w.Socket); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("node %s: remove stale socket: %w", n.Name, err)
	}
	argv := append([]string{"netns", "exec", n.NS.Name, n.env.Bin("weftd"), "run", "--config", w.ConfigPath}, o.Args...)
	w.cmd = exec.Command("ip", argv...)
	w.cmd.Env = append(os.Environ(), "NODE_NAME="+n.Name)
	w.cmd.Stdout, w.cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C on the test does not hit weftd before the
	// harness stops it in order.
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("node %s: start weftd: %w", n.Name, err)
	}
	w.PID = w.cmd.Process.Pid
	go func() {
		w.waitErr = w.cmd.Wait()
		close(w.done)
	}()
	n.env.Defer(fmt.Sprintf("weftd %s pid %d", n.Name, w.PID), func() error {
		if !w.Running() {
			return nil
		}
		return w.Stop()
	})
	n.env.Log.Info("weftd started", "node", n.Name, "pid", w.PID, "log", w.LogPath)

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, err := os.Stat(w.Socket); err == nil && st.Mode()&os.ModeSocket != 0 {
			return w, nil
		}
		select {
		case <-w.done:
			return w, fmt.Errorf("node %s: weftd exited at start-up (%v); log tail:\n%s", n.Name, w.waitErr, w.LogTail(4096))
		case <-ctx.Done():
			return w, fmt.Errorf("node %s: weftd socket %s did not appear: %w; log tail:\n%s", n.Name, w.Socket, ctx.Err(), w.LogTail(4096))
		case <-tick.C:
		}
	}
}

// Running reports whether the process has not exited yet.
func (w *Weftd) Running() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

// Done is closed when the process has exited; ExitErr is then valid.
func (w *Weftd) Done() <-chan struct{} { return w.done }

// ExitErr is cmd.Wait's error once Done is closed (nil for exit 0).
func (w *Weftd) ExitErr() error {
	<-w.done
	return w.waitErr
}

// Stop sends SIGTERM and waits up to 10 s; then SIGKILL and an error.
func (w *Weftd) Stop() error {
	if err := w.signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-w.done:
		return exitOK(w.waitErr, syscall.SIGTERM)
	case <-time.After(10 * time.Second):
		_ = w.signal(syscall.SIGKILL)
		<-w.done
		return fmt.Errorf("weftd on %s (pid %d) ignored SIGTERM for 10s; killed", w.Node.Name, w.PID)
	}
}

// Kill sends SIGKILL and waits: a crash, nothing cleaned up.
func (w *Weftd) Kill() error {
	if err := w.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-w.done
	return nil
}

// signal sends sig to the process the harness started, and only to it.
func (w *Weftd) signal(sig syscall.Signal) error {
	if !w.Running() {
		return nil
	}
	if err := w.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal weftd on %s (pid %d): %w", w.Node.Name, w.PID, err)
	}
	return nil
}

// exitOK treats death by the signal we sent, or exit 0, as success.
func exitOK(err error, sent syscall.Signal) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == sent {
			return nil
		}
	}
	return err
}

// Log returns the whole weftd log of the node (every start appended).
func (w *Weftd) Log() string {
	b, _ := os.ReadFile(w.LogPath)
	return string(b)
}

// LogTail returns at most the last n bytes of the log.
func (w *Weftd) LogTail(n int) string {
	s := w.Log()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// Status runs `weftd status --json --socket SOCK` in the node namespace.
func (w *Weftd) Status(ctx context.Context) (api.Status, error) {
	return w.Node.WeftdStatus(ctx, w.Socket)
}

// WaitFor polls Status every 100 ms until cond holds, weftd exits or ctx
// ends. It returns the last status seen.
func (w *Weftd) WaitFor(ctx context.Context, cond func(api.Status) bool) (api.Status, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last api.Status
	var lastErr error
	for {
		st, err := w.Status(ctx)
		if err == nil {
			last = st
			if cond(st) {
				return st, nil
			}
		}
		lastErr = err
		select {
		case <-w.done:
			return last, fmt.Errorf("weftd on %s exited (%v) while waiting; log tail:\n%s", w.Node.Name, w.waitErr, w.LogTail(4096))
		case <-ctx.Done():
			b, _ := json.Marshal(last)
			return last, fmt.Errorf("weftd on %s: condition not met: %w (last status %s, last error %v)", w.Node.Name, ctx.Err(), b, lastErr)
		case <-tick.C:
		}
	}
}

// WaitReady waits for status.ready.
func (w *Weftd) WaitReady(ctx context.Context) (api.Status, error) {
	return w.WaitFor(ctx, func(s api.Status) bool { return s.Ready })
}

// WeftdStatus runs `weftd status --json --socket socket` in the node
// namespace; usable without a Weftd handle (e.g. a daemon started by a test
// itself). A JSON document on stdout is returned even if the exit status is
// not zero.
func (n *Node) WeftdStatus(ctx context.Context, socket string) (api.Status, error) {
	out, stderr, err := n.weftdCLI(ctx, "status", "--json", "--socket", cmpOr(socket, n.Socket))
	var st api.Status
	if jerr := json.Unmarshal(out, &st); jerr == nil && st.Node != "" {
		return st, nil
	}
	if err == nil {
		err = fmt.Errorf("undecodable output %q", out)
	}
	return st, fmt.Errorf("weftd status on %s: %w: %s", n.Name, err, strings.TrimSpace(stderr))
}

// WeftdCleanup runs `weftd cleanup --config Node.WeftdConfigPath()`.
func (n *Node) WeftdCleanup(ctx context.Context) (string, error) {
	out, stderr, err := n.weftdCLI(ctx, "cleanup", "--config", n.WeftdConfigPath())
	if err != nil {
		return string(out) + stderr, fmt.Errorf("weftd cleanup on %s: %w: %s", n.Name, err, strings.TrimSpace(stderr))
	}
	return string(out) + stderr, nil
}

// WeftdCommand runs any weftd sub-command in the node namespace and returns
// stdout, stderr and the error (an *exec.ExitError carries the status).
func (n *Node) WeftdCommand(ctx context.Context, args ...string) (stdout []byte, stderr string, err error) {
	return n.weftdCLI(ctx, args...)
}

func (n *Node) weftdCLI(ctx context.Context, args ...string) ([]byte, string, error) {
	if !n.env.HasBin("weftd") {
		return nil, "", fmt.Errorf("%s not built (make build)", n.env.Bin("weftd"))
	}
	argv := append([]string{"netns", "exec", n.NS.Name, n.env.Bin("weftd")}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.Env = append(os.Environ(), "NODE_NAME="+n.Name)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.Bytes(), stderr.String(), err
}
