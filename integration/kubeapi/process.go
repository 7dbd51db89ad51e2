package kubeapi

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Process is one long-running binary started inside a namespace. `ip netns
// exec` and `nsenter` exec the binary in place, so pid is the binary's own
// and signals reach it, and only it.
type Process struct {
	what    string
	pid     int
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// startProcess runs `ip netns exec nsName bin args...` with stdout and
// stderr appended to logPath.
func startProcess(what, nsName, logPath, bin string, args ...string) (*Process, error) {
	return StartProcess(what, logPath, append([]string{"ip", "netns", "exec", nsName, bin}, args...)...)
}

// StartProcess runs argv (a namespace-entering wrapper that execs in place,
// then the binary and its arguments) with stdout and stderr appended to
// logPath. The caller stops it (Stop or Kill), by its PID.
func StartProcess(what, logPath string, argv ...string) (*Process, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("%s: empty command", what)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: open log: %w", what, err)
	}
	defer logf.Close() // the child holds its own descriptor
	fmt.Fprintf(logf, "=== kubeapi: %s start %s ===\n", what, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C on the test run does not reach the server
	// before the harness stops it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start %s: %w", what, strings.Join(argv, " "), err)
	}
	p := &Process{what: what, pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process ID the process had (it may have exited since).
func (p *Process) PID() int { return p.pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet (false for nil).
func (p *Process) Running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and waits up to grace, then SIGKILL. Death by the
// signal sent, or exit 0, is success.
func (p *Process) Stop(grace time.Duration) error {
	if !p.Running() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s (pid %d): SIGTERM: %w", p.what, p.pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s (pid %d) ignored SIGTERM for %s; killed", p.what, p.pid, grace)
	}
}

// Kill sends SIGKILL and waits: a crash, nothing flushed. Both Stop and
// Kill accept a nil process (never started).
func (p *Process) Kill() error {
	if !p.Running() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s (pid %d): SIGKILL: %w", p.what, p.pid, err)
	}
	<-p.done
	return nil
}

func logTail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
